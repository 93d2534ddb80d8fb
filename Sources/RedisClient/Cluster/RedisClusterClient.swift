import Logging
import NIOCore
import Synchronization

/// The cluster side of ``RedisClient``: a pool per primary, each command sent to its key's
/// slot owner, redirections followed, the topology read again when it changes.
///
/// Each primary's pool is a ``RedisClient`` of its own in standalone mode, run by ``run()``.
final class RedisClusterClient: Sendable {
    let configuration: RedisConfiguration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state: Mutex<State>
    private let nodeStarts: AsyncStream<RedisClient>
    private let nodeStartSink: AsyncStream<RedisClient>.Continuation

    struct State {
        var topology: RedisClusterTopology
        var nodes: [RedisEndpoint: RedisClient] = [:]
        var refreshRequested = false
    }

    init(
        configuration: RedisConfiguration,
        topology: RedisClusterTopology,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger
    ) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.state = Mutex(State(topology: topology))
        (self.nodeStarts, self.nodeStartSink) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
        for primary in topology.primaries { _ = self.node(primary) }
    }

    /// Runs every node's pool and refreshes the topology, until cancelled.
    func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.refreshLoop() }
            for await node in self.nodeStarts {
                group.addTask { try? await node.run() }
            }
            group.cancelAll()
        }
    }

    /// The pool of the node at `endpoint`, started on first use.
    func node(_ endpoint: RedisEndpoint) -> RedisClient {
        let (node, isNew) = self.state.withLock { state -> (RedisClient, Bool) in
            if let node = state.nodes[endpoint] { return (node, false) }
            let node = RedisClient(
                node: self.configuration.node(endpoint),
                eventLoopGroup: self.eventLoopGroup,
                logger: self.logger
            )
            state.nodes[endpoint] = node
            return (node, true)
        }
        if isNew { self.nodeStartSink.yield(node) }
        return node
    }

    var topology: RedisClusterTopology {
        self.state.withLock { $0.topology }
    }

    var isConnected: Bool {
        let primaries = self.state.withLock { state in state.topology.primaries.compactMap { state.nodes[$0] } }
        return primaries.contains { $0.isConnected }
    }

    /// Asks for a topology refresh soon (requests made meanwhile are served by the same one).
    func requestRefresh() {
        self.state.withLock { $0.refreshRequested = true }
    }

    // MARK: Topology

    private func refreshLoop() async {
        let tick = Duration.milliseconds(50)
        var sinceLast = Duration.zero
        while !Task.isCancelled {
            try? await Task.sleep(for: tick)
            sinceLast += tick
            let requested = self.state.withLock { state in
                defer { state.refreshRequested = false }
                return state.refreshRequested
            }
            // Requests are served at most every 100 ms, so that a burst of MOVED replies causes one refresh.
            guard (requested && sinceLast >= .milliseconds(100)) || sinceLast >= self.configuration.topologyRefreshInterval else {
                if requested { self.requestRefresh() }
                continue
            }
            sinceLast = .zero
            await self.refresh()
        }
    }

    /// Reads the topology from the first node that answers, primaries first, then the seeds.
    func refresh() async {
        let known = self.topology
        var candidates = known.nodes
        for seed in self.configuration.candidates where !candidates.contains(seed) { candidates.append(seed) }
        do {
            guard
                case .cluster(let topology) = try await RedisClusterTopology.discover(
                    candidates,
                    configuration: self.configuration,
                    eventLoop: self.eventLoopGroup.next(),
                    knownCluster: true
                )
            else { return }
            let changed = self.state.withLock { state in
                defer { state.topology = topology }
                return state.topology != topology
            }
            for primary in topology.primaries { _ = self.node(primary) }
            if changed { self.logger.info("Redis Cluster topology changed", metadata: ["primaries": "\(topology.primaries)"]) }
        } catch {
            self.logger.debug("Redis Cluster topology refresh failed", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Routing

    /// The pool of the primary that owns `key`'s slot (any primary for a command without a key).
    ///
    /// - Throws: `.unavailable` (retriable) when no shard owns the slot right now.
    func primary(for key: String?) throws(RedisError) -> RedisClient {
        let topology = self.topology
        let endpoint: RedisEndpoint?
        if let key {
            endpoint = topology.primary(for: HashSlot(key: key))
        } else {
            endpoint = topology.primaries.randomElement()
        }
        guard let endpoint else { throw RedisError(.unavailable, "no Redis Cluster node serves the slot of \(key ?? "any key")") }
        return self.node(endpoint)
    }

    /// A connection up now to the primary that serves `key`'s slot, as the topology has it.
    func readyConnection(forKey key: String?, on eventLoop: (any EventLoop)? = nil) -> RedisConnection? {
        (try? self.primary(for: key))?.readyConnection(forKey: key, on: eventLoop)
    }

    /// Runs `operation` on a connection to the node that serves `key`, following `MOVED` and
    /// `ASK` and retrying, with backoff, what the cluster asks to retry.
    ///
    /// `operation` gets the connection and whether it must send `ASKING` first (on that same
    /// connection, in the same write).
    ///
    /// - Throws: the operation's own errors; `.unavailable` once the retries are spent.
    func perform<T: Sendable>(
        key: String?,
        _ operation: (RedisConnection, _ asking: Bool) async throws -> T
    ) async throws -> T {
        var askTarget: RedisEndpoint?
        var redirects = 0
        var retries = 0
        var backoff = RedisBackoff(minimum: self.configuration.minimumBackoff, maximum: .milliseconds(500))
        while true {
            let redirection: RedisClusterRedirection
            do {
                let connection: RedisConnection
                do {
                    let node = try askTarget.map { self.node($0) } ?? self.primary(for: key)
                    connection = try await node.connection()
                } catch let error as RedisError where error.code == .unavailable {
                    // No node for the slot, or it cannot be reached: nothing was sent.
                    throw RedisClusterUnreachable(error: error)
                }
                return try await operation(connection, askTarget != nil)
            } catch let unreachable as RedisClusterUnreachable {
                self.requestRefresh()
                askTarget = nil
                retries += 1
                guard retries <= self.configuration.clusterRetries else {
                    throw RedisError(
                        .unavailable,
                        "Redis Cluster still unavailable after \(retries - 1) retries: \(unreachable.error.message)"
                    )
                }
                try await Task.sleep(for: backoff.next())
                continue
            } catch let error as RedisError {
                guard let found = RedisClusterRedirection(error) else {
                    if error.isRetriable { self.requestRefresh() }
                    throw error
                }
                redirection = found
                switch redirection {
                case .moved(let slot, let endpoint):
                    self.state.withLock { $0.topology.move(slot, to: endpoint) }
                    self.requestRefresh()
                    askTarget = nil
                    redirects += 1
                case .ask(_, let endpoint):
                    askTarget = endpoint
                    redirects += 1
                case .retryLater:
                    self.requestRefresh()
                    askTarget = nil
                    retries += 1
                    guard retries <= self.configuration.clusterRetries else {
                        throw RedisError(.unavailable, "Redis Cluster still unavailable after \(retries - 1) retries: \(error.message)")
                    }
                    try await Task.sleep(for: backoff.next())
                }
                guard redirects <= 16 else {
                    throw RedisError(.unavailable, "too many Redis Cluster redirections: \(error.message)")
                }
            }
        }
    }

    /// A node that could not be reached before anything was sent: safe to retry.
    private struct RedisClusterUnreachable: Error {
        var error: RedisError
    }

    func execute(_ command: RedisCommand) async throws -> RESPValue {
        try await self.perform(key: command.key) { connection, asking in
            guard asking else { return try await connection.execute(command) }
            return try await connection.pipeline([RedisCommand("ASKING"), command])[1].get()
        }
    }

    /// Splits the commands by node, sends each node's share as one pipeline, all nodes at once,
    /// and answers in the caller's order. A command redirected or refused for the moment is
    /// then sent again on its own, with ``execute(_:)``'s retries.
    func pipeline(_ commands: [RedisCommand]) async -> [Result<RESPValue, RedisError>] {
        var groups = [RedisEndpoint?: [Int]]()
        let topology = self.topology
        let anyPrimary = topology.primaries.randomElement()
        for (index, command) in commands.enumerated() {
            let endpoint = command.key.map { topology.primary(for: HashSlot(key: $0)) } ?? anyPrimary
            groups[endpoint, default: []].append(index)
        }
        var results = [Result<RESPValue, RedisError>?](repeating: nil, count: commands.count)
        await withTaskGroup(of: [(Int, Result<RESPValue, RedisError>)].self) { group in
            for (endpoint, indices) in groups {
                group.addTask {
                    guard let endpoint else {
                        return indices.map { ($0, .failure(RedisError(.unavailable, "no Redis Cluster node serves the slot"))) }
                    }
                    do {
                        let connection = try await self.node(endpoint).connection()
                        let replies = await connection.pipeline(indices.map { commands[$0] })
                        return Array(zip(indices, replies))
                    } catch {
                        // Nothing was sent: each command is retried on its own below.
                        let failure = RedisError(.unavailable, "\((error as? RedisError)?.message ?? "\(error)")")
                        return indices.map { ($0, .failure(failure)) }
                    }
                }
            }
            for await answered in group {
                for (index, result) in answered { results[index] = result }
            }
        }
        let retry = results.indices.filter { index in
            guard case .failure(let error) = results[index]! else { return false }
            return error.code == .unavailable || RedisClusterRedirection(error) != nil
        }
        // One after another: redirections are rare, and the first one retried brings the new
        // topology the others then use. (Not a task group of `(Int, Result<RESPValue,
        // RedisError>)`: with Swift 6.3.1 such a group's results, stored by index, trap in
        // release builds; a ten-line program does it too.)
        // A node whose retried command failed after its whole retry budget (about 4 s: the node
        // down, or the cluster refusing) fails the rest of its commands at once: retried one by
        // one, a pipeline of many commands for a lost shard took that budget each (a minute for
        // a resume of a few channels).
        var failedNodes: [RedisEndpoint: RedisError] = [:]
        for index in retry {
            let endpoint = commands[index].key.flatMap { self.topology.primary(for: HashSlot(key: $0)) }
            if let endpoint, let failure = failedNodes[endpoint] {
                results[index] = .failure(failure)
                continue
            }
            do {
                results[index] = .success(try await self.execute(commands[index]))
            } catch {
                let failure = error as? RedisError ?? RedisError(.unavailable, "\(error)")
                results[index] = .failure(failure)
                if let endpoint, failure.code != .serverError || RedisClusterRedirection(failure) != nil {
                    failedNodes[endpoint] = failure
                }
            }
        }
        return results.map { $0! }
    }
}
