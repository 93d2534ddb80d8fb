import ArgumentParser
import NIOCore
import Synchronization

/// Many two-member channels, both members connected, everyone sending.
struct DirectMessagesScenario: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dms",
        abstract: "N DM channels, both members connected and sending: deliveries/s, latency, server CPU per message and per delivery."
    )

    @OptionGroup var options: TargetOptions
    @Option(help: "DM channels (two sockets each).") var channels = 2500
    @Option(help: "Messages per second in total, spread over every sender; 0: each sender as fast as its acks allow.")
    var rate = 2500.0
    @Option(help: "Seconds of publishing.") var seconds = 10.0
    @Option(help: "Seconds to wait for the last deliveries.") var drain = 15.0
    @Option(help: "HTTP connections publishing to nchan (the relay publishes over each member's own socket).")
    var publishConnections = 32

    func run() async throws {
        try await BenchTarget.with(self.options) { try await self.run($0) }
    }

    private func run(_ target: BenchTarget) async throws {
        let counters = ScenarioCounters()
        let relay = target.kind == .relay
        let users = 2 * self.channels
        let sinks = (0..<users).map {
            BenchSink(counters: counters, meter: target.meter(forSocket: $0), inJSON: relay)
        }
        let window = self.rate > 0 ? 0 : 1
        var publishers: [StreamPublisher] = []
        let sockets: [WebSocketClient]
        var httpClients: [HTTPClient] = []
        if relay {
            let names = (0..<users).map { target.user("d", $0) }
            let tokens = try await target.tokens(users: names)
            let ids = try await target.concurrentMap(self.channels, width: 16) { pair in
                try await target.createDM(token: tokens[2 * pair], peer: names[2 * pair + 1])
            }
            sockets = try await target.connect(count: users) { index, _ in
                ("/ws", [("Authorization", "Bearer \(tokens[index])")], sinks[index])
            }
            guard try await waitUntil(timeout: .seconds(120), { counters.hellos.load(ordering: .relaxed) >= users }) else {
                throw BenchError("only \(counters.hellos.load(ordering: .relaxed)) of \(users) sockets got their hello")
            }
            for (index, socket) in sockets.enumerated() {
                let publisher = StreamPublisher(
                    stream: index,
                    route: .socket(socket, channel: ids[index / 2]),
                    loop: socket.eventLoop,
                    ackMeter: target.ackMeter(for: socket.eventLoop),
                    counters: counters,
                    run: target.run,
                    window: window
                )
                publishers.append(publisher)
                let sink = sinks[index]
                try await socket.eventLoop.submit { sink.publisher = publisher }.get()
            }
        } else {
            let ids = (0..<self.channels).map { "\(target.run)-dm\($0)" }
            sockets = try await target.connect(count: users) { index, _ in
                ("/sub/\(ids[index / 2])", [], sinks[index])
            }
            for _ in 0..<max(1, self.publishConnections) {
                httpClients.append(
                    try await HTTPClient.connect(
                        group: target.loops[httpClients.count % target.loops.count],
                        host: target.endpoint.host,
                        port: target.endpoint.port
                    )
                )
            }
            // nchan subscribes asynchronously: wait until the last channel counts both members.
            for id in [ids[0], ids[ids.count - 1]] {
                guard try await waitUntil(timeout: .seconds(60), { try await target.nchanSubscribers(channel: id) >= 2 }) else {
                    throw BenchError("nchan counts fewer than 2 subscribers on \(id)")
                }
            }
            for index in 0..<users {
                let client = httpClients[index % httpClients.count]
                publishers.append(
                    StreamPublisher(
                        stream: index,
                        route: .nchan(client, channel: ids[index / 2]),
                        loop: client.eventLoop,
                        ackMeter: target.ackMeter(for: client.eventLoop),
                        counters: counters,
                        run: target.run,
                        window: window
                    )
                )
            }
        }
        try await Task.sleep(for: .seconds(1))
        _ = try await target.collect(target.meters)

        let processes = self.options.processes
        let before = processes.sample()
        let start = ProcessStats.now()
        try await ScenarioSupport.drive(publishers, rate: self.rate, seconds: self.seconds, counters: counters)
        try await ScenarioSupport.waitForAcks(publishers, timeout: .seconds(Int64(self.drain)))
        let published = try await ScenarioSupport.published(publishers)
        let messages = published.reduce(0) { $0 + $1.acked }
        let failures = published.reduce(0) { $0 + $1.failed }
        let expected = 2 * messages
        _ = try await waitUntil(timeout: .seconds(Int64(self.drain))) { counters.deliveries.load(ordering: .relaxed) >= expected }
        let after = processes.sample()
        let deliveries = try await target.collect(target.meters)
        let acks = try await target.collect(target.ackMeters)
        let counts = published.map(\.acked)
        let check = try await ScenarioSupport.check(sinks, sockets: sockets, counters: counters) { index in
            let first = index & ~1
            return [(stream: first, published: counts[first]), (stream: first + 1, published: counts[first + 1])]
        }
        let closeCodes = ScenarioSupport.closeCodes(counters)
        await ScenarioSupport.close(sockets, counters: counters)
        for client in httpClients { client.close() }

        let usage = after.since(before)
        let active = Double(max(deliveries.last, start + 1) - start) / 1e9
        var report = Report(scenario: "dms", target: target.kind)
        report.add("channels", "DM channels", Double(self.channels))
        report.add("sockets", "sockets", Double(users))
        report.add("rate", "publish rate", self.rate, unit: self.rate > 0 ? "msg/s" : "(ack-paced)")
        report.add("published", "messages published (acked)", Double(messages))
        report.add("publish_errors", "publish errors", Double(failures))
        report.add("messages_per_s", "messages/s", Double(messages) / active)
        report.add("deliveries", "deliveries", Double(deliveries.count))
        report.add("expected", "deliveries expected", Double(expected))
        report.add("deliveries_per_s", "deliveries/s", Double(deliveries.count) / active)
        report.addLatency("latency", "publish-to-receive", deliveries.latency)
        report.addLatency("ack", "publish ack", acks.latency)
        report.addCheck(check)
        report.add("close_codes", "close codes", text: closeCodes)
        report.addCPU(usage, per: deliveries.count, unitName: "delivery", measured: !processes.server.isEmpty)
        if !processes.server.isEmpty, messages > 0 {
            report.add("server_us_per_message", "server CPU per message", usage.server * 1e6 / Double(messages), decimals: 1, unit: "µs")
            report.add("redis_us_per_message", "Redis CPU per message", usage.redis * 1e6 / Double(messages), decimals: 1, unit: "µs")
            report.add(
                "server_redis_us_per_message",
                "server + Redis CPU per message",
                usage.serverAndRedis * 1e6 / Double(messages),
                decimals: 1,
                unit: "µs"
            )
        }
        report.print(json: self.options.json)
    }
}
