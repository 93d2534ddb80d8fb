import ArgumentParser
import NIOCore
import Synchronization

/// One group channel, N member sockets, one publisher.
struct FanoutScenario: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout",
        abstract: "One channel with N member sockets and one publisher: deliveries/s, publish-to-receive latency, server CPU per delivery."
    )

    @OptionGroup var options: TargetOptions
    @Option(help: "Member sockets.") var sockets = 1000
    @Option(help: "Messages per second; 0: as fast as acknowledgements allow (see --window).") var rate = 10.0
    @Option(help: "Messages in flight when ack-paced.") var window = 1
    @Option(help: "Seconds of publishing.") var seconds = 10.0
    @Option(help: "Seconds to wait for the last deliveries.") var drain = 15.0

    func run() async throws {
        try await BenchTarget.with(self.options) { try await self.run($0) }
    }

    private func run(_ target: BenchTarget) async throws {
        let counters = ScenarioCounters()
        let relay = target.kind == .relay
        let sinks = (0..<self.sockets).map {
            BenchSink(counters: counters, meter: target.meter(forSocket: $0), inJSON: relay)
        }
        let channel: String
        var memberSockets: [WebSocketClient]
        let publisher: StreamPublisher
        var publisherSocket: WebSocketClient?
        var publisherHTTP: HTTPClient?
        if relay {
            let owner = target.user("pub", 0)
            let ownerToken = try await target.token(user: owner)
            let users = (0..<self.sockets).map { target.user("f", $0) }
            channel = try await target.createGroup(owner: owner, ownerToken: ownerToken, members: users)
            let tokens = try await target.tokens(users: users)
            memberSockets = try await target.connect(count: self.sockets) { index, _ in
                ("/ws", [("Authorization", "Bearer \(tokens[index])")], sinks[index])
            }
            let publisherSink = BenchSink(counters: counters, meter: target.meters[0], inJSON: true, countsDeliveries: false)
            let socket = try await target.connect(count: 1) { _, _ in
                ("/ws", [("Authorization", "Bearer \(ownerToken)")], publisherSink)
            }[0]
            publisherSocket = socket
            guard try await waitUntil(timeout: .seconds(60), { counters.hellos.load(ordering: .relaxed) >= self.sockets + 1 }) else {
                throw BenchError("only \(counters.hellos.load(ordering: .relaxed)) of \(self.sockets + 1) sockets got their hello")
            }
            publisher = StreamPublisher(
                stream: 0,
                route: .socket(socket, channel: channel),
                loop: socket.eventLoop,
                ackMeter: target.ackMeter(for: socket.eventLoop),
                counters: counters,
                run: target.run,
                window: self.rate > 0 ? 0 : self.window
            )
            try await socket.eventLoop.submit { publisherSink.publisher = publisher }.get()
        } else {
            channel = "\(target.run)-fanout"
            memberSockets = try await target.connect(count: self.sockets) { index, _ in
                ("/sub/\(channel)", [], sinks[index])
            }
            guard try await waitUntil(timeout: .seconds(60), { try await target.nchanSubscribers(channel: channel) >= self.sockets }) else {
                throw BenchError("nchan counts fewer than \(self.sockets) subscribers on \(channel)")
            }
            let client = try await HTTPClient.connect(group: target.loops[0], host: target.endpoint.host, port: target.endpoint.port)
            publisherHTTP = client
            publisher = StreamPublisher(
                stream: 0,
                route: .nchan(client, channel: channel),
                loop: client.eventLoop,
                ackMeter: target.ackMeter(for: client.eventLoop),
                counters: counters,
                run: target.run,
                window: self.rate > 0 ? 0 : self.window
            )
        }
        // Settle: the connects' own work is not the scenario's.
        try await Task.sleep(for: .seconds(1))
        _ = try await target.collect(target.meters)

        let processes = self.options.processes
        let before = processes.sample()
        let start = ProcessStats.now()
        try await ScenarioSupport.drive([publisher], rate: self.rate, seconds: self.seconds, counters: counters)
        try await ScenarioSupport.waitForAcks([publisher], timeout: .seconds(Int64(self.drain)))
        let acked = try await ScenarioSupport.published([publisher])[0]
        let expected = acked.acked * self.sockets
        _ = try await waitUntil(timeout: .seconds(Int64(self.drain))) { counters.deliveries.load(ordering: .relaxed) >= expected }
        let after = processes.sample()
        let deliveries = try await target.collect(target.meters)
        let acks = try await target.collect(target.ackMeters)
        let check = try await ScenarioSupport.check(sinks, sockets: memberSockets, counters: counters) { _ in
            [(stream: 0, published: acked.acked)]
        }
        let closeCodes = ScenarioSupport.closeCodes(counters)
        memberSockets += publisherSocket.map { [$0] } ?? []
        await ScenarioSupport.close(memberSockets, counters: counters)
        publisherHTTP?.close()

        let usage = after.since(before)
        let active = Double(max(deliveries.last, start + 1) - start) / 1e9
        var report = Report(scenario: "fanout", target: target.kind)
        report.add("sockets", "sockets", Double(self.sockets))
        report.add("rate", "publish rate", self.rate, unit: self.rate > 0 ? "msg/s" : "(ack-paced)")
        report.add("published", "messages published (acked)", Double(acked.acked))
        report.add("publish_errors", "publish errors", Double(acked.failed))
        report.add("deliveries", "deliveries", Double(deliveries.count))
        report.add("expected", "deliveries expected", Double(expected))
        report.add("deliveries_per_s", "deliveries/s", Double(deliveries.count) / active)
        report.addLatency("latency", "publish-to-receive", deliveries.latency)
        report.addLatency("ack", "publish ack", acks.latency)
        report.addCheck(check)
        report.add("close_codes", "close codes", text: closeCodes)
        report.addCPU(usage, per: deliveries.count, unitName: "delivery", measured: !processes.server.isEmpty)
        if !processes.server.isEmpty, acked.acked > 0 {
            report.add(
                "server_redis_us_per_message",
                "server + Redis CPU per message",
                usage.serverAndRedis * 1e6 / Double(acked.acked),
                decimals: 1,
                unit: "µs"
            )
        }
        report.print(json: self.options.json)
    }
}
