import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A sharded Pub/Sub subscriber (`SSUBSCRIBE`) on a connection of its own.
///
/// Topics can be added and dropped at any time; they stay subscribed across reconnects.
/// Messages and reconnect signals arrive in order on ``events``, which has one consumer and
/// buffers without bound: the socket is always drained, so Redis's output-buffer limit for
/// Pub/Sub clients never trips because of a slow consumer here (the consumer must keep up).
public final class RedisSubscriber: Service, Sendable {
    public let configuration: RedisConfiguration
    /// Messages and reconnect signals. Iterate it from one task only.
    public let events: AsyncStream<RedisSubscriberEvent>
    private let eventSink: AsyncStream<RedisSubscriberEvent>.Continuation
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())

    struct State {
        var topics: Set<String> = []
        var confirmed: Set<String> = []
        var connection: RedisConnection?
        var waiters: [String: [PendingSubscription]] = [:]

        /// Every waiter, removed from the state, to release outside the lock.
        mutating func takeAllWaiters() -> [PendingSubscription] {
            defer { self.waiters = [:] }
            return self.waiters.values.flatMap { $0 }
        }
    }

    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "redis.subscriber")
    ) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        (self.events, self.eventSink) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    /// Subscribes to `topics` and returns once Redis has confirmed each of them.
    ///
    /// If the connection is down, returns at once: the topics are subscribed when it is back,
    /// and a ``RedisSubscriberEvent/resubscribed(topics:)`` event says so. A confirmation that
    /// does not come within the command timeout closes the connection, with the same outcome.
    ///
    /// - Returns: `true` if Redis confirmed every topic; `false` if the call returned without
    ///   (messages published meanwhile may be missed until the `resubscribed` event).
    @discardableResult
    public func subscribe(_ topics: some Sequence<String>) async -> Bool {
        let topics = Array(topics)
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let pending = PendingSubscription(continuation)
            let connection: RedisConnection? = self.state.withLock { state in
                guard let connection = state.connection else {
                    state.topics.formUnion(topics)
                    return nil
                }
                for topic in topics where !state.confirmed.contains(topic) {
                    if state.topics.insert(topic).inserted {
                        connection.sendWithoutReply(RedisCommand("SSUBSCRIBE", key: topic, [topic]))
                    }
                    pending.expectOneMore()
                    state.waiters[topic, default: []].append(pending)
                }
                return connection
            }
            guard let connection else {
                pending.release()
                return
            }
            guard pending.arm() else {
                pending.resume(confirmed: true)
                return
            }
            let timeout = TimeAmount(self.configuration.commandTimeout)
            connection.channel.eventLoop.scheduleTask(in: timeout) {
                let unconfirmed = self.state.withLock { state in
                    state.connection === connection && topics.contains { state.topics.contains($0) && !state.confirmed.contains($0) }
                }
                if unconfirmed {
                    self.logger.warning("Redis did not confirm a subscription in time; reconnecting")
                    connection.close()
                }
            }
        }
    }

    /// Drops topics; their messages stop arriving (any already in flight are discarded).
    public func unsubscribe(_ topics: some Sequence<String>) {
        let waiters = self.state.withLock { state -> [PendingSubscription] in
            var waiters = [PendingSubscription]()
            for topic in topics where state.topics.remove(topic) != nil {
                state.confirmed.remove(topic)
                state.connection?.sendWithoutReply(RedisCommand("SUNSUBSCRIBE", key: topic, [topic]))
                // A subscribe still waiting for this topic has nothing left to wait for.
                waiters += state.waiters.removeValue(forKey: topic) ?? []
            }
            return waiters
        }
        for waiter in waiters { waiter.confirmOne() }
    }

    /// The topics subscribed now (or to be subscribed when the connection is back).
    public var topics: Set<String> {
        self.state.withLock { $0.topics }
    }

    /// Keeps the subscriber connected until graceful shutdown or cancellation; then ends ``events``.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var backoff = RedisBackoff(minimum: self.configuration.minimumBackoff, maximum: self.configuration.maximumBackoff)
            while !Task.isCancelled {
                do {
                    let connection = try await RedisConnection.connect(
                        configuration: self.configuration,
                        eventLoop: self.eventLoopGroup.next(),
                        onPush: { [weak self] push in self?.received(push) }
                    )
                    backoff.reset()
                    await self.serve(connection)
                } catch {
                    self.logger.debug("Redis subscriber connect failed", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: backoff.next())
            }
        }
        let waiters = self.state.withLock { $0.takeAllWaiters() }
        for waiter in waiters { waiter.release() }
        self.eventSink.finish()
    }

    /// Subscribes everything on a new connection, announces it, and health-checks it until it closes.
    private func serve(_ connection: RedisConnection) async {
        let topics = self.state.withLock { state in
            state.connection = connection
            state.confirmed = []
            // Sent under the lock, so that an unsubscribe cannot slip its SUNSUBSCRIBE in first.
            for topic in state.topics {
                connection.sendWithoutReply(RedisCommand("SSUBSCRIBE", key: topic, [topic]))
            }
            return state.topics
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    await connection.closed()
                } onCancel: {
                    connection.close()
                }
                // Release whoever waits for a confirmation from this connection: none will come.
                self.detach(connection)
            }
            group.addTask {
                if !topics.isEmpty {
                    await self.subscribe(topics)
                    let current = self.state.withLock { $0.connection === connection }
                    if current { self.eventSink.yield(.resubscribed(topics: topics.sorted())) }
                }
                while !Task.isCancelled {
                    try? await Task.sleep(for: self.configuration.healthCheckInterval)
                    guard !Task.isCancelled else { break }
                    do {
                        _ = try await connection.execute(RedisCommand("PING"))
                    } catch {
                        connection.close()
                        break
                    }
                }
            }
            await group.next()
            group.cancelAll()
        }
        self.logger.debug("Redis subscriber connection closed")
    }

    /// Forgets a closed connection and releases every subscribe waiting on it.
    private func detach(_ connection: RedisConnection) {
        let waiters = self.state.withLock { state -> [PendingSubscription] in
            guard state.connection === connection else { return [] }
            state.connection = nil
            state.confirmed = []
            return state.takeAllWaiters()
        }
        for waiter in waiters { waiter.release() }
    }

    /// Handles a push on the connection's event loop: it must not block.
    private func received(_ push: RESPValue) {
        guard case .array(let elements) = push, elements.count >= 3,
            let kind = elements[0].string, let topic = elements[1].string
        else { return }
        switch kind {
        case "smessage", "message":
            guard case .bulkString(let payload) = elements[2] else { return }
            let subscribed = self.state.withLock { $0.topics.contains(topic) }
            if subscribed { self.eventSink.yield(.message(topic: topic, payload: payload)) }
        case "ssubscribe", "subscribe":
            let waiters = self.state.withLock { state -> [PendingSubscription] in
                guard state.topics.contains(topic) else { return [] }
                state.confirmed.insert(topic)
                return state.waiters.removeValue(forKey: topic) ?? []
            }
            for waiter in waiters { waiter.confirmOne() }
        default:
            break
        }
    }
}

/// One ``RedisSubscriber/subscribe(_:)`` call waiting for its topics' confirmations.
final class PendingSubscription: Sendable {
    private struct State {
        var continuation: CheckedContinuation<Bool, Never>?
        var remaining = 0
        var armed = false
    }
    private let state: Mutex<State>

    init(_ continuation: CheckedContinuation<Bool, Never>) {
        self.state = Mutex(State(continuation: continuation))
    }

    func expectOneMore() {
        self.state.withLock { $0.remaining += 1 }
    }

    /// Starts waiting; false if nothing is left to wait for.
    func arm() -> Bool {
        self.state.withLock { state in
            state.armed = true
            return state.remaining > 0
        }
    }

    func confirmOne() {
        let done = self.state.withLock { state in
            state.remaining -= 1
            return state.armed && state.remaining <= 0
        }
        if done { self.resume(confirmed: true) }
    }

    /// Resumes the caller now, whatever is still unconfirmed (the connection went away).
    func release() {
        self.resume(confirmed: false)
    }

    /// Resumes the caller, once: later calls do nothing.
    func resume(confirmed: Bool) {
        let continuation = self.state.withLock { state in
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume(returning: confirmed)
    }
}
