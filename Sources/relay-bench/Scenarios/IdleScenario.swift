import ArgumentParser
import NIOCore
import Synchronization

/// N sockets that only answer pings: what holding them costs the server.
struct IdleScenario: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idle",
        abstract: "N idle sockets on one channel: server RSS per connection, and CPU per connection per heartbeat."
    )

    @OptionGroup var options: TargetOptions
    @Option(help: "Idle sockets (the open-file limit here is 20,000 per process).") var sockets = 10_000
    @Option(help: "The server's heartbeat (ping) interval in seconds, as it was started with.") var heartbeat = 5.0
    @Option(help: "Heartbeat intervals over which CPU is measured.") var intervals = 4
    @Option(help: "Seconds to let the server settle after the last connect.") var settle = 3.0

    func run() async throws {
        try await BenchTarget.with(self.options) { try await self.run($0) }
    }

    private func run(_ target: BenchTarget) async throws {
        let processes = self.options.processes
        guard !processes.server.isEmpty else { throw ValidationError("idle needs --server-pids (it measures the server)") }
        let counters = ScenarioCounters()
        let relay = target.kind == .relay
        let sinks = (0..<self.sockets).map {
            BenchSink(counters: counters, meter: target.meter(forSocket: $0), inJSON: relay)
        }
        let path: @Sendable (Int) -> (String, [(String, String)])
        let channel: String
        if relay {
            let owner = target.user("idle-owner", 0)
            let ownerToken = try await target.token(user: owner)
            let users = (0..<self.sockets).map { target.user("i", $0) }
            channel = try await target.createGroup(owner: owner, ownerToken: ownerToken, members: users)
            let tokens = try await target.tokens(users: users)
            path = { index in ("/ws", [("Authorization", "Bearer \(tokens[index])")]) }
        } else {
            channel = "\(target.run)-idle"
            path = { _ in ("/sub/\(channel)", []) }
        }
        try await Task.sleep(for: .seconds(1))
        let rssBefore = processes.serverResidentBytes
        let connectStart = ProcessStats.now()
        let sockets = try await target.connect(count: self.sockets) { index, _ in
            let (path, headers) = path(index)
            return (path, headers, sinks[index])
        }
        if relay {
            guard try await waitUntil(timeout: .seconds(120), { counters.hellos.load(ordering: .relaxed) >= self.sockets }) else {
                throw BenchError("only \(counters.hellos.load(ordering: .relaxed)) of \(self.sockets) sockets got their hello")
            }
        } else {
            guard try await waitUntil(timeout: .seconds(120), { try await target.nchanSubscribers(channel: channel) >= self.sockets })
            else {
                throw BenchError("nchan counts fewer than \(self.sockets) subscribers on \(channel)")
            }
        }
        let connectSeconds = Double(ProcessStats.now() - connectStart) / 1e9
        try await Task.sleep(for: .milliseconds(Int64(self.settle * 1000)))
        let rssAfter = processes.serverResidentBytes

        let before = processes.sample()
        try await Task.sleep(for: .milliseconds(Int64(self.heartbeat * Double(self.intervals) * 1000)))
        let after = processes.sample()
        let rssEnd = processes.serverResidentBytes
        let closed = counters.closed.load(ordering: .relaxed)
        let closeCodes = ScenarioSupport.closeCodes(counters)
        await ScenarioSupport.close(sockets, counters: counters)

        let usage = after.since(before)
        let perConnectionHeartbeat = 1e6 / Double(self.sockets) / (usage.seconds / self.heartbeat)
        var report = Report(scenario: "idle", target: target.kind)
        report.add("sockets", "idle sockets", Double(self.sockets))
        report.add("connect_s", "time to connect all", connectSeconds, decimals: 2, unit: "s")
        report.add("rss_before_mib", "server RSS before", Double(rssBefore) / 1_048_576, decimals: 1, unit: "MiB")
        report.add("rss_after_mib", "server RSS connected", Double(rssAfter) / 1_048_576, decimals: 1, unit: "MiB")
        report.add("rss_end_mib", "server RSS at the end", Double(rssEnd) / 1_048_576, decimals: 1, unit: "MiB")
        report.add(
            "rss_per_connection_kib",
            "RSS per connection",
            Double(rssAfter - rssBefore) / 1024 / Double(self.sockets),
            decimals: 2,
            unit: "KiB"
        )
        report.add("heartbeat_s", "heartbeat", self.heartbeat, decimals: 1, unit: "s")
        report.add("server_cpu_s", "server CPU", usage.server, decimals: 2, unit: "s")
        report.add("redis_cpu_s", "Redis CPU", usage.redis, decimals: 2, unit: "s")
        report.add("seconds", "measured over", usage.seconds, decimals: 1, unit: "s")
        report.add(
            "server_us_per_conn_heartbeat",
            "server CPU per connection per heartbeat",
            usage.server * perConnectionHeartbeat,
            decimals: 2,
            unit: "µs"
        )
        report.add(
            "redis_us_per_conn_heartbeat",
            "Redis CPU per connection per heartbeat",
            usage.redis * perConnectionHeartbeat,
            decimals: 2,
            unit: "µs"
        )
        report.add(
            "loadgen_us_per_conn_heartbeat",
            "load generator CPU per connection per heartbeat",
            usage.loadGenerator * perConnectionHeartbeat,
            decimals: 2,
            unit: "µs"
        )
        report.add("closed", "sockets closed by the server", Double(closed))
        report.add("close_codes", "close codes", text: closeCodes)
        report.print(json: self.options.json)
    }
}
