import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A private Redis Cluster for tests: `primaries` × (1 + replicas) `redis-server`s on loopback
/// (ports and bus ports below the ephemeral range), joined with `redis-cli --cluster create`.
///
/// Stopped (and its files removed) when released. Admin helpers go through `redis-cli`, so that
/// they work whatever state the relay's own client is in.
public final class RedisClusterProcess: @unchecked Sendable {
    public let nodes: [RedisServerProcess]

    /// Starts the nodes, creates the cluster and waits until every node says `cluster_state:ok`
    /// and every primary has its replicas in sync.
    public init(primaries: Int = 3, replicas: Int = 1) async throws {
        // RedisServerProcess waits for its server by polling with usleep: off the concurrency
        // pool, whose few threads the other tests need meanwhile.
        self.nodes = try await onOwnThread {
            try (0..<(primaries * (1 + replicas))).map { _ in
                let bus = try unusedPort()
                return try RedisServerProcess(arguments: [
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                    "--cluster-port", "\(bus)", "--repl-diskless-sync-delay", "0",
                ])
            }
        }
        let create = try await Self.cli(
            ["--cluster", "create"] + nodes.map { "127.0.0.1:\($0.port)" } + ["--cluster-replicas", "\(replicas)", "--cluster-yes"],
            timeout: .seconds(60)
        )
        guard create.contains("[OK] All 16384 slots covered") else {
            throw TestFailure("redis-cli --cluster create failed: \(create.suffix(2000))")
        }
        try await self.waitUntilStable(primaries: primaries, replicas: replicas)
    }

    /// A comma-separated list of every node's URL: the relay's `--redis`.
    public var urls: String { self.nodes.map(\.url).joined(separator: ",") }

    /// The URL of the first node (enough as a seed).
    public var seedURL: String { self.nodes[0].url }

    /// Waits until every running node reports `cluster_state:ok`, agrees on the primaries, and
    /// every primary has `replicas` replicas online.
    public func waitUntilStable(primaries: Int = 3, replicas: Int = 1, timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        var last = ""
        while ContinuousClock.now < deadline {
            var stable = true
            var views = Set<String>()
            for node in self.nodes where canConnect(port: node.port) {
                let info = (try? await self.command(node.port, ["CLUSTER", "INFO"])) ?? ""
                guard info.contains("cluster_state:ok") else {
                    stable = false
                    last = "node \(node.port): \(info.prefix(200))"
                    break
                }
                let shape = try await self.primaries(asSeenBy: node.port)
                views.insert(shape.map { "\($0.port):\($0.slots)" }.sorted().joined(separator: ","))
                if shape.count != primaries {
                    stable = false
                    last = "node \(node.port) sees \(shape.count) primaries"
                }
            }
            if stable && views.count == 1 {
                for primary in try await self.primaries(asSeenBy: self.nodes.first { canConnect(port: $0.port) }!.port) {
                    let replication = (try? await self.command(primary.port, ["INFO", "replication"])) ?? ""
                    let online = replication.split(whereSeparator: \.isNewline).filter {
                        $0.hasPrefix("slave") && $0.contains("state=online")
                    }.count
                    if online < replicas {
                        stable = false
                        last = "primary \(primary.port) has \(online) replicas online"
                    }
                }
                if stable { return }
            } else if views.count > 1 {
                last = "nodes disagree: \(views)"
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw TestFailure("the Redis Cluster did not settle: \(last)")
    }

    /// A primary as `CLUSTER NODES` shows it.
    public struct Primary: Sendable {
        public var id: String
        public var port: Int
        /// Its slots as `CLUSTER NODES` lists them (`0-5460 …`).
        public var slots: String
        public var failed: Bool
    }

    /// The primaries that `port`'s node knows, with their slots.
    public func primaries(asSeenBy port: Int) async throws -> [Primary] {
        let text = try await self.command(port, ["CLUSTER", "NODES"])
        return text.split(whereSeparator: \.isNewline).compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count >= 8, fields[2].contains("master") else { return nil }
            let address = fields[1].split(separator: "@")[0]
            guard let nodePort = Int(address.split(separator: ":").last ?? "") else { return nil }
            return Primary(
                id: String(fields[0]),
                port: nodePort,
                slots: fields.dropFirst(8).joined(separator: " "),
                failed: fields[2].contains("fail")
            )
        }
    }

    /// The primary that serves `slot`, as `port`'s node sees it.
    public func owner(ofSlot slot: Int, asSeenBy port: Int) async throws -> Primary? {
        try await self.primaries(asSeenBy: port).first { primary in
            !primary.failed
                && primary.slots.split(separator: " ").contains { range in
                    let bounds = range.split(separator: "-").compactMap { Int($0) }
                    guard let low = bounds.first else { return false }
                    return (low...(bounds.last ?? low)).contains(slot)
                }
        }
    }

    /// The node running on `port`.
    public func node(port: Int) -> RedisServerProcess? {
        self.nodes.first { $0.port == port }
    }

    /// Moves `slot` to the primary `target`, the way `redis-cli --cluster reshard` does:
    /// IMPORTING/MIGRATING, the keys in batches of `batch` with MIGRATE (pausing `pause` between
    /// batches, so that a test can work during it), then `SETSLOT NODE` on every primary.
    public func migrate(slot: Int, to target: Primary, batch: Int = 10, pause: Duration = .milliseconds(20)) async throws {
        let port = self.nodes.first { canConnect(port: $0.port) }!.port
        guard let source = try await self.owner(ofSlot: slot, asSeenBy: port) else { throw TestFailure("slot \(slot) has no owner") }
        guard source.id != target.id else { return }
        _ = try await self.command(target.port, ["CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", source.id])
        _ = try await self.command(source.port, ["CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", target.id])
        for _ in 0..<100_000 {
            let keys = try await self.command(source.port, ["CLUSTER", "GETKEYSINSLOT", "\(slot)", "\(batch)"])
                .split(whereSeparator: \.isNewline).map(String.init).filter { !$0.isEmpty }
            if keys.isEmpty { break }
            let reply = try await self.command(
                source.port,
                ["MIGRATE", "127.0.0.1", "\(target.port)", "", "0", "5000", "REPLACE", "KEYS"] + keys
            )
            guard reply.hasPrefix("OK") || reply.hasPrefix("NOKEY") else { throw TestFailure("MIGRATE answered \(reply)") }
            try await Task.sleep(for: pause)
        }
        for primary in try await self.primaries(asSeenBy: port) where !primary.failed {
            _ = try await self.command(primary.port, ["CLUSTER", "SETSLOT", "\(slot)", "NODE", target.id])
        }
    }

    /// Runs a command on one node with `redis-cli` and returns its raw output.
    @discardableResult
    public func command(_ port: Int, _ arguments: [String]) async throws -> String {
        try await Self.cli(["-p", "\(port)"] + arguments, timeout: .seconds(20))
    }

    private static func cli(_ arguments: [String], timeout: Duration) async throws -> String {
        let binary =
            ProcessInfo.processInfo.environment["REDIS_CLI_BIN"]
            ?? ProcessInfo.processInfo.environment["REDIS_SERVER_BIN"].map {
                URL(fileURLWithPath: $0).deletingLastPathComponent().appendingPathComponent("redis-cli").path
            }
            ?? "/usr/bin/redis-cli"
        let result = try await ChildProcess.run(
            binary,
            ["-h", "127.0.0.1"] + arguments,
            environment: ProcessInfo.processInfo.environment,
            timeout: timeout
        )
        guard result.termination == .exited(0) else {
            throw TestFailure("redis-cli \(arguments.joined(separator: " ")) failed: \(result.standardError.prefix(500))")
        }
        return result.standardOutput
    }
}

/// Runs blocking `work` (a process start that polls with `usleep`) on a thread of its own, so
/// that it does not hold one of the concurrency pool's few threads.
public func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try work() }) }
        thread.stackSize = 1 << 20
        thread.start()
    }
}
