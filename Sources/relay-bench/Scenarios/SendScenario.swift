import ArgumentParser
import NIOCore
import Synchronization

/// N connections sending as fast as their acknowledgements allow, over WebSocket and over REST.
struct SendScenario: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "N connections sending as fast as acks allow (WebSocket send frames, REST POSTs): acked messages/s, ack latency."
    )

    @OptionGroup var options: TargetOptions
    @Option(help: "Sending connections, each its own user in its own channel.") var connections = 50
    @Option(help: "Messages in flight per connection.") var window = 1
    @Option(help: "Seconds of sending, per path.") var seconds = 10.0
    @Option(help: "Paths to measure: ws, rest, or ws,rest.") var paths = "ws,rest"

    func validate() throws {
        guard self.connections >= 1 else { throw ValidationError("--connections: at least 1") }
        for path in self.paths.split(separator: ",") where path != "ws" && path != "rest" {
            throw ValidationError("--paths: ws, rest")
        }
    }

    func run() async throws {
        guard self.options.target == .relay else { throw ValidationError("send runs against the relay only") }
        try await BenchTarget.with(self.options) { target in
            let names = (0..<self.connections).map { target.user("s", $0) }
            let tokens = try await target.tokens(users: names)
            let channels = try await target.concurrentMap(self.connections, width: 16) { index in
                try await target.createGroup(owner: names[index], ownerToken: tokens[index], members: [])
            }
            for path in self.paths.split(separator: ",") {
                try await self.measure(String(path), target: target, tokens: tokens, channels: channels)
            }
        }
    }

    private func measure(_ path: String, target: BenchTarget, tokens: [String], channels: [String]) async throws {
        let counters = ScenarioCounters()
        var publishers: [StreamPublisher] = []
        var sockets: [WebSocketClient] = []
        var clients: [HTTPClient] = []
        if path == "ws" {
            // The sender's own socket receives each message too: one delivery per message.
            let sinks = (0..<self.connections).map {
                BenchSink(counters: counters, meter: target.meter(forSocket: $0), inJSON: true, countsDeliveries: false)
            }
            sockets = try await target.connect(count: self.connections) { index, _ in
                ("/ws", [("Authorization", "Bearer \(tokens[index])")], sinks[index])
            }
            guard try await waitUntil(timeout: .seconds(60), { counters.hellos.load(ordering: .relaxed) >= self.connections }) else {
                throw BenchError("only \(counters.hellos.load(ordering: .relaxed)) of \(self.connections) sockets got their hello")
            }
            for (index, socket) in sockets.enumerated() {
                let publisher = StreamPublisher(
                    stream: index,
                    route: .socket(socket, channel: channels[index]),
                    loop: socket.eventLoop,
                    ackMeter: target.ackMeter(for: socket.eventLoop),
                    counters: counters,
                    run: target.run + path,
                    window: self.window
                )
                publishers.append(publisher)
                let sink = sinks[index]
                try await socket.eventLoop.submit { sink.publisher = publisher }.get()
            }
        } else {
            for index in 0..<self.connections {
                let client = try await HTTPClient.connect(
                    group: target.loops[index % target.loops.count],
                    host: target.endpoint.host,
                    port: target.endpoint.port
                )
                clients.append(client)
                publishers.append(
                    StreamPublisher(
                        stream: index,
                        route: .rest(client, channel: channels[index], token: tokens[index]),
                        loop: client.eventLoop,
                        ackMeter: target.ackMeter(for: client.eventLoop),
                        counters: counters,
                        run: target.run + path,
                        window: self.window
                    )
                )
            }
        }
        _ = try await target.collect(target.ackMeters)
        let processes = self.options.processes
        let before = processes.sample()
        try await ScenarioSupport.drive(publishers, rate: 0, seconds: self.seconds, counters: counters)
        let sent = processes.sample()
        let ackedInWindow = counters.acks.load(ordering: .relaxed)
        try await ScenarioSupport.waitForAcks(publishers, timeout: .seconds(10))
        let acks = try await target.collect(target.ackMeters)
        let failures = counters.errors.load(ordering: .relaxed)
        await ScenarioSupport.close(sockets, counters: counters)
        for client in clients { client.close() }

        let usage = sent.since(before)
        var report = Report(scenario: "send-\(path)", target: target.kind)
        report.add("connections", "connections", Double(self.connections))
        report.add("window", "in flight per connection", Double(self.window))
        report.add("acked", "messages acked", Double(ackedInWindow))
        report.add("errors", "errors", Double(failures))
        report.add("messages_per_s", "acked messages/s", Double(ackedInWindow) / usage.seconds)
        report.addLatency("ack", "ack latency", acks.latency, withP90: true)
        report.addCPU(usage, per: ackedInWindow, unitName: "message", measured: !processes.server.isEmpty)
        report.print(json: self.options.json)
    }
}
