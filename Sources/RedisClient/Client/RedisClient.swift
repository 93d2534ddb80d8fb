import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A Redis client: a small pool of multiplexed, pipelined connections that reconnect by themselves.
///
/// Run it as a `Service` (or call ``run()`` in a task) for its connections to be opened and
/// kept. When the first seed that answers is a Redis Cluster node (`cluster_enabled:1`), the
/// client runs in cluster mode: it discovers the shards, keeps a pool per primary, sends each
/// command to the owner of its key's slot (``RedisCommand/key``) and follows redirections;
/// nothing changes for the caller. Otherwise commands go round-robin over the live connections. While no connection is up,
/// commands wait for one up to the command timeout, except after a connect attempt has just
/// failed: then they fail at once with ``RedisError/Code/unavailable``, so callers can answer
/// "unavailable" instead of queueing behind a dead server.
public final class RedisClient: Service, Sendable {
    public let configuration: RedisConfiguration
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger
    private let state: Mutex<PoolState>
    /// Writes whose replicas were late, until they hold them (``run(_:keys:arguments:lateReplication:)``).
    let lateReplication = LateReplication()

    struct PoolState {
        var connections: [RedisConnection?]
        var next = 0
        var waiters: [UInt64: CheckedContinuation<RedisConnection, any Error>] = [:]
        var nextWaiterID: UInt64 = 0
        var lastConnectFailed = false
        var isShutDown = false
        var mode: Mode
        /// The connection that found the server standalone, opened on the loop of the pool's
        /// first connection (slot 0), which it becomes.
        var probe: RedisConnection?

        enum Mode {
            /// `run()` has not yet asked a seed what it is; commands wait as for a connection.
            case detecting
            case standalone
            case cluster(RedisClusterClient)
        }

        /// A connection that is up: one on `eventLoop` if there is one (its commands then go out
        /// and come back with no hop between threads), else the next in turn.
        mutating func pick(on eventLoop: (any EventLoop)? = nil) -> RedisConnection? {
            if let eventLoop {
                for case let connection? in self.connections where connection.channel.eventLoop === eventLoop && connection.isActive {
                    return connection
                }
            }
            let count = self.connections.count
            for offset in 0..<count {
                let index = (self.next + offset) % count
                if let connection = self.connections[index], connection.isActive {
                    self.next = (index + 1) % count
                    return connection
                }
            }
            return nil
        }
    }

    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "redis")
    ) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.state = Mutex(PoolState(connections: Array(repeating: nil, count: max(1, configuration.poolSize)), mode: .detecting))
    }

    /// The pool of one cluster node: standalone from the start, it asks nothing of the server.
    init(node configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.state = Mutex(PoolState(connections: Array(repeating: nil, count: max(1, configuration.poolSize)), mode: .standalone))
    }

    /// Opens the pool's connections and keeps them open until graceful shutdown or cancellation.
    ///
    /// First asks the seeds, in turn until one answers, whether this is a Redis Cluster.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            if case .cluster(let cluster) = await self.detectMode() {
                await cluster.run()
                return
            }
            guard !Task.isCancelled else { return }
            await withDiscardingTaskGroup { group in
                for slot in 0..<self.configuration.poolSize {
                    group.addTask { await self.maintainConnection(slot: slot) }
                }
            }
        }
        let (waiters, probe) = self.state.withLock { state in
            state.isShutDown = true
            defer {
                state.waiters = [:]
                state.probe = nil
            }
            return (state.waiters.values, state.probe)
        }
        probe?.close()
        for waiter in waiters {
            waiter.resume(throwing: RedisError(.shutdown, "the Redis client is shutting down"))
        }
    }

    /// Asks the seeds what they are, until one answers or the task is cancelled; settles the mode.
    private func detectMode() async -> PoolState.Mode {
        if case .standalone = self.state.withLock({ $0.mode }) { return .standalone }
        var backoff = RedisBackoff(minimum: self.configuration.minimumBackoff, maximum: self.configuration.maximumBackoff)
        let candidates = self.configuration.candidates
        var attempt = 0
        while !Task.isCancelled {
            // One seed per attempt, so that a dead first seed does not hold up the others.
            let seed = candidates[attempt % candidates.count]
            attempt += 1
            do {
                let discovery = try await RedisClusterTopology.discover(
                    [seed],
                    configuration: self.configuration,
                    eventLoop: self.eventLoop(forSlot: 0),
                    keepingStandalone: seed == RedisEndpoint(host: self.configuration.host, port: self.configuration.port)
                )
                switch discovery {
                case .standalone(let probe):
                    self.state.withLock { state in
                        state.mode = .standalone
                        state.probe = probe
                    }
                    return .standalone
                case .cluster(let topology):
                    let cluster = RedisClusterClient(
                        configuration: self.configuration,
                        topology: topology,
                        eventLoopGroup: self.eventLoopGroup,
                        logger: self.logger
                    )
                    let waiters = self.state.withLock { state in
                        state.mode = .cluster(cluster)
                        defer { state.waiters = [:] }
                        return state.waiters.values
                    }
                    // They waited for a standalone connection: they go through the cluster instead.
                    for waiter in waiters { waiter.resume(throwing: ModeSettled()) }
                    self.logger.info("Redis Cluster mode", metadata: ["primaries": "\(topology.primaries)"])
                    return .cluster(cluster)
                }
            } catch {
                let waiters = self.state.withLock { state in
                    state.lastConnectFailed = true
                    defer { state.waiters = [:] }
                    return state.waiters.values
                }
                let failure = RedisError(.unavailable, "\(error)")
                for waiter in waiters { waiter.resume(throwing: failure) }
                self.logger.debug("Redis connect failed", metadata: ["error": "\(error)"])
            }
            if attempt % candidates.count == 0 { try? await Task.sleep(for: backoff.next()) }
        }
        return .detecting
    }

    /// Thrown to a caller that waited for a standalone connection when the client went into cluster mode.
    struct ModeSettled: Error {}

    /// Where a command goes: a standalone connection, or the cluster router.
    enum Route {
        case connection(RedisConnection)
        case cluster(RedisClusterClient)
    }

    /// A connection to send a command with `key` on right now, without waiting, while one is up:
    /// on a cluster, to the primary that serves the key's slot as far as the client knows.
    func readyConnection(forKey key: String?, on eventLoop: (any EventLoop)? = nil) -> RedisConnection? {
        enum Pick {
            case connection(RedisConnection?)
            case cluster(RedisClusterClient)
        }
        let pick = self.state.withLock { state -> Pick in
            switch state.mode {
            case .standalone: .connection(state.pick(on: eventLoop))
            case .cluster(let cluster): .cluster(cluster)
            case .detecting: .connection(nil)
            }
        }
        switch pick {
        case .connection(let connection): return connection
        case .cluster(let cluster): return cluster.readyConnection(forKey: key, on: eventLoop)
        }
    }

    func route() async throws -> Route {
        while true {
            if case .cluster(let cluster) = self.state.withLock({ $0.mode }) { return .cluster(cluster) }
            do {
                return .connection(try await self.connection())
            } catch is ModeSettled {
                continue
            }
        }
    }

    /// The event loop of the pool's connection `slot`: the group's loops in turn, so that each
    /// loop has a connection of its own when the pool has at least as many as the group has loops.
    private func eventLoop(forSlot slot: Int) -> any EventLoop {
        let loops = Array(self.eventLoopGroup.makeIterator())
        return loops.isEmpty ? self.eventLoopGroup.next() : loops[slot % loops.count]
    }

    private func maintainConnection(slot: Int) async {
        var backoff = RedisBackoff(minimum: self.configuration.minimumBackoff, maximum: self.configuration.maximumBackoff)
        while !Task.isCancelled {
            do {
                // Slot 0's first connection is the one that asked the server what it is, if still
                // up: it is on slot 0's loop. Taken by another slot, it would leave one loop
                // with two connections and another with none, whose callers' commands would then
                // go to another loop's thread and their replies come back from it.
                let probe =
                    slot == 0
                    ? self.state.withLock { state in
                        defer { state.probe = nil }
                        return state.probe
                    } : nil
                let connection: RedisConnection
                if let probe, probe.isActive {
                    connection = probe
                } else {
                    probe?.close()
                    connection = try await RedisConnection.connect(
                        configuration: self.configuration,
                        eventLoop: self.eventLoop(forSlot: slot)
                    )
                }
                backoff.reset()
                let waiters = self.state.withLock { state in
                    state.connections[slot] = connection
                    state.lastConnectFailed = false
                    defer { state.waiters = [:] }
                    return state.waiters.values
                }
                for waiter in waiters { waiter.resume(returning: connection) }
                await withTaskCancellationHandler {
                    await connection.closed()
                } onCancel: {
                    connection.close()
                }
                self.state.withLock { $0.connections[slot] = nil }
                self.logger.debug("Redis connection closed", metadata: ["slot": "\(slot)"])
            } catch {
                let waiters = self.state.withLock { state in
                    state.lastConnectFailed = true
                    defer { state.waiters = [:] }
                    return state.waiters.values
                }
                let failure = RedisError(.unavailable, "\(error)")
                for waiter in waiters { waiter.resume(throwing: failure) }
                self.logger.debug("Redis connect failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: backoff.next())
        }
    }

    /// A live connection, waiting for one if none is up and none has just failed to connect.
    func connection() async throws -> RedisConnection {
        enum Pick {
            case ready(RedisConnection)
            case fail(RedisError)
            case modeSettled
            case wait
        }
        let pick: Pick = self.state.withLock { state in
            if let connection = state.pick() { return .ready(connection) }
            if state.isShutDown { return .fail(RedisError(.shutdown, "the Redis client is shut down")) }
            if case .cluster = state.mode { return .modeSettled }
            if state.lastConnectFailed { return .fail(RedisError(.unavailable, "Redis is unreachable")) }
            return .wait
        }
        switch pick {
        case .ready(let connection): return connection
        case .fail(let error): throw error
        case .modeSettled: throw ModeSettled()
        case .wait: return try await self.waitForConnection()
        }
    }

    private func waitForConnection() async throws -> RedisConnection {
        let id = self.state.withLock { state in
            state.nextWaiterID += 1
            return state.nextWaiterID
        }
        let timeout = self.configuration.commandTimeout
        let eventLoop = self.eventLoopGroup.any()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<RedisConnection, any Error>) in
                let outcome: Result<RedisConnection, any Error>? = self.state.withLock { state in
                    if let connection = state.pick() { return .success(connection) }
                    // Checked again under the lock: the waiters may have been drained since.
                    if state.isShutDown { return .failure(RedisError(.shutdown, "the Redis client is shut down")) }
                    if case .cluster = state.mode { return .failure(ModeSettled()) }
                    if state.lastConnectFailed { return .failure(RedisError(.unavailable, "Redis is unreachable")) }
                    state.waiters[id] = continuation
                    return nil
                }
                if let outcome {
                    continuation.resume(with: outcome)
                    return
                }
                eventLoop.scheduleTask(in: TimeAmount(timeout)) {
                    self.failWaiter(id, RedisError(.unavailable, "no connection to Redis within the command timeout"))
                }
            }
        } onCancel: {
            self.failWaiter(id, CancellationError())
        }
    }

    private func failWaiter(_ id: UInt64, _ error: any Error) {
        let waiter = self.state.withLock { $0.waiters.removeValue(forKey: id) }
        waiter?.resume(throwing: error)
    }

    /// Whether a connection is up right now.
    public var isConnected: Bool {
        let (cluster, connected) = self.state.withLock { state -> (RedisClusterClient?, Bool) in
            if case .cluster(let cluster) = state.mode { return (cluster, false) }
            return (nil, state.connections.contains { $0?.isActive == true })
        }
        return cluster?.isConnected ?? connected
    }

    /// The topology the client knows, in cluster mode.
    var clusterTopology: RedisClusterTopology? {
        if case .cluster(let cluster) = self.state.withLock({ $0.mode }) { return cluster.topology }
        return nil
    }

    /// Whether the client found a Redis Cluster and runs in cluster mode.
    public var isCluster: Bool {
        if case .cluster = self.state.withLock({ $0.mode }) { return true }
        return false
    }

    // MARK: Commands

    /// Sends one command and returns its reply.
    ///
    /// - Throws: ``RedisError``: `.serverError` for an error reply (``RedisError/replyCode``
    ///   names it), or a transport code (``RedisError/isRetriable``).
    @discardableResult
    public func execute(_ command: RedisCommand) async throws -> RESPValue {
        switch try await self.route() {
        case .connection(let connection): try await connection.execute(command)
        case .cluster(let cluster): try await cluster.execute(command)
        }
    }

    /// Sends `command` and reads its reply in place with `decode` (no ``RESPValue`` is made of
    /// it), on the event loop of the connection it went out on; `decode` must copy what it keeps.
    /// Routed, redirected and retried as ``execute(_:)``.
    package func execute<Value: Sendable>(
        _ command: RedisCommand,
        decode: @escaping @Sendable (RESPReply) throws -> Value
    ) async throws -> Value {
        switch try await self.route() {
        case .connection(let connection):
            return try await connection.execute(command, on: connection.channel.eventLoop, decode: decode).get()
        case .cluster(let cluster):
            return try await cluster.perform(key: command.key) { connection, asking in
                try await connection.execute(command, asking: asking, on: connection.channel.eventLoop, decode: decode).get()
            }
        }
    }

    /// ``execute(_:decode:)`` for a caller on an event loop, with no task (for the relay's live
    /// connections, whose reads of the log are answered on their loops): when a connection to the
    /// command's node is up, the command goes out at once, on `eventLoop`'s own connection if it
    /// has one, and the future completes on `eventLoop`. Should a cluster node redirect it,
    /// ``execute(_:decode:)`` takes over. Otherwise nil: use ``execute(_:decode:)``, which waits
    /// for a connection.
    package func executeImmediately<Value: Sendable>(
        _ command: RedisCommand,
        on eventLoop: any EventLoop,
        decode: @escaping @Sendable (RESPReply) throws -> Value
    ) -> EventLoopFuture<Value>? {
        guard let connection = self.readyConnection(forKey: command.key, on: eventLoop) else { return nil }
        return self.followingRedirection(connection.execute(command, on: eventLoop, decode: decode), on: eventLoop) {
            try await self.execute(command, decode: decode)
        }
    }

    /// `future`, unless a cluster node redirected its command (which then did not run): then
    /// `retry`, an `async` path that follows redirections, run in a task.
    func followingRedirection<Value: Sendable>(
        _ future: EventLoopFuture<Value>,
        on eventLoop: any EventLoop,
        retry: @escaping @Sendable () async throws -> Value
    ) -> EventLoopFuture<Value> {
        future.flatMapError { error -> EventLoopFuture<Value> in
            guard let redisError = error as? RedisError, RedisClusterRedirection(redisError) != nil, self.isCluster else {
                return eventLoop.makeFailedFuture(error)
            }
            return eventLoop.makeFutureWithTask(retry)
        }
    }

    /// Sends a command given by name and arguments. Its first argument is taken as its key
    /// (where a cluster routes it), unless the command is one that takes no key.
    @discardableResult
    public func execute(_ name: String, _ arguments: any RedisArgument...) async throws -> RESPValue {
        let key = Self.keylessCommands.contains(name.uppercased()) ? nil : arguments.first as? String
        return try await self.execute(RedisCommand(name, key: key, arguments))
    }

    private static let keylessCommands: Set<String> = [
        "PING", "ECHO", "INFO", "TIME", "WAIT", "SCRIPT", "CLUSTER", "CLIENT", "CONFIG", "DBSIZE", "FLUSHALL",
        "FLUSHDB", "DEBUG", "COMMAND", "MEMORY", "SLOWLOG", "LATENCY", "ROLE", "READONLY", "READWRITE", "ASKING",
    ]

    /// Runs `commands` for their effect alone, in writes of up to `batch` commands, each sent
    /// after the one before it is done: their replies are neither sent by Redis nor read
    /// (``RedisEncodedCommand``; where Redis refuses `CLIENT REPLY`, read and dropped). On a
    /// Redis Cluster each node's share goes as a pipeline, redirections followed, replies dropped.
    ///
    /// - Throws: ``RedisError`` when a write could not be made or its end was not answered;
    ///   the commands' own errors are not told.
    public func executeWithoutReplies(_ commands: [RedisEncodedCommand], batch: Int = 1000) async throws {
        precondition(batch > 0, "a batch holds at least one command")
        var start = 0
        while start < commands.count {
            let end = min(start + batch, commands.count)
            switch try await self.route() {
            case .connection(let connection): try await connection.executeWithoutReplies(commands[start..<end])
            case .cluster(let cluster): _ = await cluster.pipeline(commands[start..<end].map(\.command))
            }
            start = end
        }
    }

    /// Sends every command in one write on one connection; results come back in order.
    ///
    /// In cluster mode the commands are split by the node that serves each key, every node's
    /// share goes out as one pipeline, and the results still come back in the caller's order.
    ///
    /// - Throws: only when no connection can be had; each command's own failure is its result.
    public func pipeline(_ commands: [RedisCommand]) async throws -> [Result<RESPValue, RedisError>] {
        switch try await self.route() {
        case .connection(let connection): await connection.pipeline(commands)
        case .cluster(let cluster): await cluster.pipeline(commands)
        }
    }
}
