import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A Redis client: a small pool of multiplexed, pipelined connections that reconnect by themselves.
///
/// Run it as a `Service` (or call ``run()`` in a task) for its connections to be opened and
/// kept. Commands go round-robin over the live connections. While no connection is up,
/// commands wait for one up to the command timeout, except after a connect attempt has just
/// failed: then they fail at once with ``RedisError/Code/unavailable``, so callers can answer
/// "unavailable" instead of queueing behind a dead server.
public final class RedisClient: Service, Sendable {
    public let configuration: RedisConfiguration
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger
    private let state: Mutex<PoolState>

    struct PoolState {
        var connections: [RedisConnection?]
        var next = 0
        var waiters: [UInt64: CheckedContinuation<RedisConnection, any Error>] = [:]
        var nextWaiterID: UInt64 = 0
        var lastConnectFailed = false
        var isShutDown = false

        mutating func pick() -> RedisConnection? {
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
        self.state = Mutex(PoolState(connections: Array(repeating: nil, count: max(1, configuration.poolSize))))
    }

    /// Opens the pool's connections and keeps them open until graceful shutdown or cancellation.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                for slot in 0..<self.configuration.poolSize {
                    group.addTask { await self.maintainConnection(slot: slot) }
                }
            }
        }
        let waiters = self.state.withLock { state in
            state.isShutDown = true
            defer { state.waiters = [:] }
            return state.waiters.values
        }
        for waiter in waiters {
            waiter.resume(throwing: RedisError(.shutdown, "the Redis client is shutting down"))
        }
    }

    private func maintainConnection(slot: Int) async {
        var backoff = RedisBackoff(minimum: self.configuration.minimumBackoff, maximum: self.configuration.maximumBackoff)
        while !Task.isCancelled {
            do {
                let connection = try await RedisConnection.connect(
                    configuration: self.configuration,
                    eventLoop: self.eventLoopGroup.next()
                )
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
            case wait
        }
        let pick: Pick = self.state.withLock { state in
            if let connection = state.pick() { return .ready(connection) }
            if state.isShutDown { return .fail(RedisError(.shutdown, "the Redis client is shut down")) }
            if state.lastConnectFailed { return .fail(RedisError(.unavailable, "Redis is unreachable")) }
            return .wait
        }
        switch pick {
        case .ready(let connection): return connection
        case .fail(let error): throw error
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
                let outcome: Result<RedisConnection, RedisError>? = self.state.withLock { state in
                    if let connection = state.pick() { return .success(connection) }
                    // Checked again under the lock: the waiters may have been drained since.
                    if state.isShutDown { return .failure(RedisError(.shutdown, "the Redis client is shut down")) }
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
        self.state.withLock { state in state.connections.contains { $0?.isActive == true } }
    }

    // MARK: Commands

    /// Sends one command and returns its reply.
    ///
    /// - Throws: ``RedisError``: `.serverError` for an error reply (``RedisError/replyCode``
    ///   names it), or a transport code (``RedisError/isRetriable``).
    @discardableResult
    public func execute(_ command: RedisCommand) async throws -> RESPValue {
        try await self.connection().execute(command)
    }

    @discardableResult
    public func execute(_ name: String, _ arguments: any RedisArgument...) async throws -> RESPValue {
        try await self.execute(RedisCommand(name, arguments))
    }

    /// Sends every command in one write on one connection; results come back in order.
    ///
    /// - Throws: only when no connection can be had; each command's own failure is its result.
    public func pipeline(_ commands: [RedisCommand]) async throws -> [Result<RESPValue, RedisError>] {
        try await self.connection().pipeline(commands)
    }
}
