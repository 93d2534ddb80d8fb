import ArgumentParser
import NIOCore
import NIOHTTP1
import Synchronization

/// M clients reconnecting at once, each resuming one channel from a cursor far behind.
struct ResumeScenario: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume",
        abstract: "M clients reconnecting at once with cursors N events behind: time until all caught up, Redis commands per client."
    )

    @OptionGroup var options: TargetOptions
    @Option(help: "Clients reconnecting at once.") var clients = 1000
    @Option(help: "Events each is behind.") var behind = 1000
    @Option(help: "Seconds to wait for everyone to catch up.") var timeout = 120.0

    func run() async throws {
        guard self.options.target == .relay else { throw ValidationError("resume runs against the relay only") }
        try await BenchTarget.with(self.options) { try await self.run($0) }
    }

    private func run(_ target: BenchTarget) async throws {
        let counters = ScenarioCounters()
        let owner = target.user("resume-owner", 0)
        let ownerToken = try await target.token(user: owner)
        let users = (0..<self.clients).map { target.user("r", $0) }
        let channel = try await target.createGroup(owner: owner, ownerToken: ownerToken, members: users)
        let tokens = try await target.tokens(users: users)

        // The backlog: `behind` messages from the owner, 50 in flight (counted apart: its socket closes before the clients come).
        let ownerCounters = ScenarioCounters()
        let ownerSink = BenchSink(counters: ownerCounters, meter: target.meters[0], inJSON: true, countsDeliveries: false)
        let ownerSocket = try await target.connect(count: 1) { _, _ in ("/ws", [("Authorization", "Bearer \(ownerToken)")], ownerSink) }[0]
        guard try await waitUntil(timeout: .seconds(10), { ownerCounters.hellos.load(ordering: .relaxed) >= 1 }) else {
            throw BenchError("the publisher got no hello")
        }
        let publisher = StreamPublisher(
            stream: 0,
            route: .socket(ownerSocket, channel: channel),
            loop: ownerSocket.eventLoop,
            ackMeter: target.ackMeters[0],
            counters: ownerCounters,
            run: target.run,
            window: 50,
            limit: self.behind
        )
        try await ownerSocket.eventLoop.submit { ownerSink.publisher = publisher }.get()
        publisher.start()
        guard try await waitUntil(timeout: .seconds(120), { ownerCounters.acks.load(ordering: .relaxed) >= self.behind }) else {
            throw BenchError("only \(ownerCounters.acks.load(ordering: .relaxed)) of \(self.behind) backlog messages were acked")
        }
        ownerSocket.close()
        let info = try await target.call(.GET, "/channels/\(channel)", token: ownerToken)
        guard let lastSeq = BenchTarget.field("last_seq", in: info.text).flatMap({ Int($0) }) else {
            throw BenchError("GET /channels/\(channel): no last_seq")
        }
        let cursor = lastSeq - self.behind
        let resume = #"{"type":"resume","cursors":{"\#(channel)":\#(cursor)}}"#
        let sinks = (0..<self.clients).map {
            BenchSink(counters: counters, meter: target.meter(forSocket: $0), inJSON: true) { socket in socket.send(resume) }
        }
        try await Task.sleep(for: .seconds(1))
        _ = try await target.collect(target.meters)

        let processes = self.options.processes
        let commandsBefore = try await redisCommandCalls(url: self.options.redis)
        let before = processes.sample()
        let start = ProcessStats.now()
        let sockets = try await target.connect(count: self.clients) { index, _ in
            ("/ws", [("Authorization", "Bearer \(tokens[index])")], sinks[index])
        }
        let expected = self.clients * self.behind
        let caughtUp = try await waitUntil(timeout: .milliseconds(Int64(self.timeout * 1000))) {
            counters.resumed.load(ordering: .relaxed) >= self.clients && counters.deliveries.load(ordering: .relaxed) >= expected
        }
        let end = ProcessStats.now()
        let after = processes.sample()
        let commandsAfter = try await redisCommandCalls(url: self.options.redis)
        let deliveries = try await target.collect(target.meters)
        let behind = self.behind
        let check = try await ScenarioSupport.check(sinks, sockets: sockets, counters: counters) { _ in [(stream: 0, published: behind)] }
        await ScenarioSupport.close(sockets, counters: counters)

        let usage = after.since(before)
        var report = Report(scenario: "resume", target: target.kind)
        report.add("clients", "clients", Double(self.clients))
        report.add("behind", "events behind", Double(self.behind))
        report.add("caught_up", "all caught up", text: caughtUp ? "yes" : "no (timed out)")
        report.add("catch_up_s", "time until all caught up", Double(end - start) / 1e9, decimals: 2, unit: "s")
        report.add("deliveries", "events replayed", Double(deliveries.count))
        report.add("deliveries_per_s", "events/s", Double(deliveries.count) / (Double(end - start) / 1e9))
        report.addCheck(check)
        if let commandsBefore, let commandsAfter {
            report.add(
                "redis_commands_per_client",
                "Redis commands per client",
                Double(commandsAfter - commandsBefore - 1) / Double(self.clients),
                decimals: 1
            )
        }
        report.addCPU(usage, per: self.clients, unitName: "client", measured: !processes.server.isEmpty)
        if !processes.server.isEmpty, deliveries.count > 0 {
            report.add(
                "server_redis_us_per_event",
                "server + Redis CPU per replayed event",
                usage.serverAndRedis * 1e6 / Double(deliveries.count),
                decimals: 2,
                unit: "µs"
            )
        }
        report.print(json: self.options.json)
    }
}
