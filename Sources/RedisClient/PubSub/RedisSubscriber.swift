import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A sharded Pub/Sub subscriber (`SSUBSCRIBE`) on a connection of its own.
///
/// On a Redis Cluster (found as ``RedisClient`` finds it) it keeps one connection per primary
/// and subscribes each topic at the primary that owns its slot. When a slot moves (a failover,
/// a resharding) its topics are subscribed at the new owner and a
/// ``RedisSubscriberEvent/resubscribed(topics:)`` event names them: what was published in
/// between is lost, as across a reconnect.
///
/// Topics can be added and dropped at any time; they stay subscribed across reconnects.
/// Messages and reconnect signals arrive in order on ``events``, which has one consumer and
/// buffers without bound: the socket is always drained, so Redis's output-buffer limit for
/// Pub/Sub clients never trips because of a slow consumer here (the consumer must keep up).
/// Or, with ``deliverEvents(to:)``, they are handed to a function on the connection's event loop
/// as they arrive, with no task in between.
public final class RedisSubscriber: Service, Sendable {
    public let configuration: RedisConfiguration
    /// Messages and reconnect signals (unless ``deliverEvents(to:)`` took them). Iterate it from
    /// one task only.
    public var events: AsyncStream<RedisSubscriberEvent> { self.eventSink.events }
    private let eventSink: RedisSubscriberSink
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())
    /// Set on the subscriber of one cluster node, which its cluster subscriber owns: called with
    /// a topic the server dropped by itself (its slot moved), or nil when the node refused a
    /// subscription (`MOVED`) or cannot be reached, so that the topology is read again.
    private let onLost: (@Sendable (String?) -> Void)?

    struct State {
        var mode: Mode = .detecting
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
        self.eventSink = RedisSubscriberSink()
        self.onLost = nil
    }

    enum Mode {
        case detecting
        case standalone
        case cluster(RedisClusterSubscriber)
    }

    /// The subscriber of one cluster node: delivers into its cluster subscriber's stream.
    init(
        node configuration: RedisConfiguration,
        sink: RedisSubscriberSink,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger,
        onLost: @escaping @Sendable (String?) -> Void
    ) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.eventSink = sink
        self.onLost = onLost
        self.state.withLock { $0.mode = .standalone }
    }

    /// Hands every event to `handler` instead of ``events``: called in order, on the event loop
    /// of the connection that received it (on a Redis Cluster, one per node: each node's events
    /// in order). It must not block. Call it before ``run()``.
    public func deliverEvents(to handler: @escaping @Sendable (RedisSubscriberEvent) -> Void) {
        self.eventSink.deliver(to: handler)
    }

    private var cluster: RedisClusterSubscriber? {
        if case .cluster(let cluster) = self.state.withLock({ $0.mode }) { return cluster }
        return nil
    }

    /// Whether the connection is up (one node's, for a node's subscriber).
    var isConnected: Bool {
        self.state.withLock { $0.connection != nil }
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
        if let cluster = self.cluster { return await cluster.subscribe(topics) }
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let pending = PendingSubscription(continuation)
            let (connection, cluster): (RedisConnection?, RedisClusterSubscriber?) = self.state.withLock { state in
                if case .cluster(let cluster) = state.mode { return (nil, cluster) }
                guard let connection = state.connection else {
                    state.topics.formUnion(topics)
                    return (nil, nil)
                }
                for topic in topics where !state.confirmed.contains(topic) {
                    if state.topics.insert(topic).inserted {
                        connection.sendWithoutReply(RedisCommand("SSUBSCRIBE", key: topic, [topic]))
                    }
                    pending.expectOneMore()
                    state.waiters[topic, default: []].append(pending)
                }
                return (connection, nil)
            }
            if let cluster {
                // The mode was settled meanwhile: the topics go to the cluster's subscribers.
                Task { pending.resume(confirmed: await cluster.subscribe(topics)) }
                return
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
        if let cluster = self.cluster {
            cluster.unsubscribe(topics)
            return
        }
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
        if let cluster = self.cluster { return cluster.topics }
        return self.state.withLock { $0.topics }
    }

    /// Keeps the subscriber connected until graceful shutdown or cancellation; then ends ``events``.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            if let cluster = await self.detectMode() {
                await cluster.run()
                return
            }
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
                    self.nodeLost()
                }
                try? await Task.sleep(for: backoff.next())
            }
        }
        let waiters = self.state.withLock { $0.takeAllWaiters() }
        for waiter in waiters { waiter.release() }
        // A node's subscriber delivers into its cluster subscriber's stream, which is not its to end.
        if self.onLost == nil { self.eventSink.finish() }
    }

    /// Asks the seeds whether this is a Redis Cluster, until one answers; nil for standalone
    /// (or cancelled). In cluster mode the topics asked for so far move to the cluster subscriber.
    private func detectMode() async -> RedisClusterSubscriber? {
        if case .standalone = self.state.withLock({ $0.mode }) { return nil }
        var backoff = RedisBackoff(minimum: self.configuration.minimumBackoff, maximum: self.configuration.maximumBackoff)
        let candidates = self.configuration.candidates
        var attempt = 0
        while !Task.isCancelled {
            let seed = candidates[attempt % candidates.count]
            attempt += 1
            do {
                let discovery = try await RedisClusterTopology.discover(
                    [seed],
                    configuration: self.configuration,
                    eventLoop: self.eventLoopGroup.next()
                )
                guard case .cluster(let topology) = discovery else {
                    self.state.withLock { $0.mode = .standalone }
                    return nil
                }
                let cluster = RedisClusterSubscriber(
                    configuration: self.configuration,
                    topology: topology,
                    sink: self.eventSink,
                    eventLoopGroup: self.eventLoopGroup,
                    logger: self.logger
                )
                let (topics, waiters) = self.state.withLock { state in
                    state.mode = .cluster(cluster)
                    defer { state.topics = [] }
                    return (state.topics, state.takeAllWaiters())
                }
                for waiter in waiters { waiter.release() }
                if !topics.isEmpty {
                    // Asked for before the mode was known, never subscribed: announce them once they are.
                    Task {
                        _ = await cluster.subscribe(Array(topics))
                        self.eventSink.yield(.resubscribed(topics: topics.sorted()))
                    }
                }
                return cluster
            } catch {
                self.logger.debug("Redis subscriber connect failed", metadata: ["error": "\(error)"])
            }
            if attempt % candidates.count == 0 { try? await Task.sleep(for: backoff.next()) }
        }
        return nil
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
                self.nodeLost()
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

    /// A node's subscriber lost its node: its topics may have to move. One without topics (a
    /// primary that became a replica, or is gone) asks nothing, so that it does not keep the
    /// topology being read while it retries.
    private func nodeLost() {
        guard let onLost = self.onLost, !self.state.withLock({ $0.topics.isEmpty }) else { return }
        onLost(nil)
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
    private func received(_ push: RedisPush) {
        switch push {
        case .message(let topic, let payload):
            let subscribed = self.state.withLock { $0.topics.contains(topic) }
            if subscribed { self.eventSink.yield(.message(topic: topic, payload: payload)) }
        case .other(let value):
            self.received(value)
        }
    }

    /// Any other push (a confirmation, an unasked `sunsubscribe`), or a cluster node's refusal
    /// of a subscription.
    private func received(_ push: RESPValue) {
        if case .error(let message) = push {
            // A subscription refused by a cluster node that does not own the slot (any more).
            self.logger.debug("Redis refused a subscription", metadata: ["error": "\(message)"])
            self.onLost?(nil)
            return
        }
        guard case .array(let elements) = push, elements.count >= 3,
            let kind = elements[0].string, let topic = elements[1].string
        else { return }
        // Messages come as ``RedisPush/message(topic:payload:)``, not here.
        switch kind {
        case "ssubscribe", "subscribe":
            let waiters = self.state.withLock { state -> [PendingSubscription] in
                guard state.topics.contains(topic) else { return [] }
                state.confirmed.insert(topic)
                return state.waiters.removeValue(forKey: topic) ?? []
            }
            for waiter in waiters { waiter.confirmOne() }
        case "sunsubscribe":
            // Unasked (the topic is still wanted): the server dropped it because its slot moved.
            guard let onLost = self.onLost else { return }
            let wanted = self.state.withLock { state -> (Bool, [PendingSubscription]) in
                guard state.topics.remove(topic) != nil else { return (false, []) }
                state.confirmed.remove(topic)
                return (true, state.waiters.removeValue(forKey: topic) ?? [])
            }
            for waiter in wanted.1 { waiter.release() }
            if wanted.0 { onLost(topic) }
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
