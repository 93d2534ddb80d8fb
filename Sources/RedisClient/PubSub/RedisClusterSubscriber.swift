import Logging
import NIOCore
import Synchronization

/// The cluster side of ``RedisSubscriber``: one subscriber per primary, each topic subscribed at
/// the primary that owns its slot, and topics moved when their slot moves.
///
/// A topic is moved when a topology refresh shows another owner, when its node drops it by
/// itself (Redis sends `sunsubscribe` for the shard channels of a slot it gave away), or when
/// its node refuses it or cannot be reached (then the topology is read again until it changes).
/// Each move ends with a ``RedisSubscriberEvent/resubscribed(topics:)`` event for the topics moved.
final class RedisClusterSubscriber: Sendable {
    private let configuration: RedisConfiguration
    private let sink: RedisSubscriberSink
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state: Mutex<State>
    private let nodeStarts: AsyncStream<RedisSubscriber>
    private let nodeStartSink: AsyncStream<RedisSubscriber>.Continuation

    struct State {
        var topology: RedisClusterTopology
        var nodes: [RedisEndpoint: RedisSubscriber] = [:]
        /// Each wanted topic, with the node it is subscribed at (nil: no node owns its slot now).
        var assigned: [String: RedisEndpoint?] = [:]
        /// Topics a node dropped by itself: to subscribe again wherever their slot is now.
        var lost: Set<String> = []
        var refreshRequested = false
    }

    init(
        configuration: RedisConfiguration,
        topology: RedisClusterTopology,
        sink: RedisSubscriberSink,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger
    ) {
        self.configuration = configuration
        self.sink = sink
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.state = Mutex(State(topology: topology))
        (self.nodeStarts, self.nodeStartSink) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
        for primary in topology.primaries { _ = self.node(primary) }
    }

    /// Runs every node's subscriber and follows the topology until cancelled.
    func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.refreshLoop() }
            for await node in self.nodeStarts {
                group.addTask { try? await node.run() }
            }
            group.cancelAll()
        }
    }

    private func node(_ endpoint: RedisEndpoint) -> RedisSubscriber {
        let (node, isNew) = self.state.withLock { state -> (RedisSubscriber, Bool) in
            if let node = state.nodes[endpoint] { return (node, false) }
            let node = RedisSubscriber(
                node: self.configuration.node(endpoint),
                sink: self.sink,
                eventLoopGroup: self.eventLoopGroup,
                logger: self.logger,
                onLost: { [weak self] topic in self?.lost(topic) }
            )
            state.nodes[endpoint] = node
            return (node, true)
        }
        if isNew { self.nodeStartSink.yield(node) }
        return node
    }

    var topics: Set<String> {
        self.state.withLock { Set($0.assigned.keys) }
    }

    /// Subscribes each topic at its slot's owner; true once every owner confirmed.
    func subscribe(_ topics: [String]) async -> Bool {
        let groups = self.state.withLock { state -> [RedisEndpoint?: [String]] in
            var groups = [RedisEndpoint?: [String]]()
            for topic in topics {
                if let existing = state.assigned[topic] {
                    groups[existing, default: []].append(topic)
                    continue
                }
                let owner = state.topology.primary(for: HashSlot(key: topic))
                state.assigned[topic] = .some(owner)
                groups[owner, default: []].append(topic)
            }
            return groups
        }
        if groups[nil] != nil { self.requestRefresh() }
        return await withTaskGroup(of: Bool.self) { group in
            for (endpoint, topics) in groups {
                group.addTask {
                    guard let endpoint else { return false }
                    return await self.node(endpoint).subscribe(topics)
                }
            }
            var confirmed = true
            for await one in group { confirmed = confirmed && one }
            return confirmed
        }
    }

    func unsubscribe(_ topics: some Sequence<String>) {
        let groups = self.state.withLock { state -> [RedisEndpoint: [String]] in
            var groups = [RedisEndpoint: [String]]()
            for topic in topics {
                state.lost.remove(topic)
                guard let assigned = state.assigned.removeValue(forKey: topic), let endpoint = assigned else { continue }
                groups[endpoint, default: []].append(topic)
            }
            return groups
        }
        for (endpoint, topics) in groups { self.node(endpoint).unsubscribe(topics) }
    }

    private func lost(_ topic: String?) {
        self.state.withLock { state in
            if let topic, state.assigned[topic] != nil { state.lost.insert(topic) }
            state.refreshRequested = true
        }
    }

    private func requestRefresh() {
        self.state.withLock { $0.refreshRequested = true }
    }

    // MARK: Topology

    private func refreshLoop() async {
        let tick = Duration.milliseconds(50)
        var sinceLast = Duration.zero
        while !Task.isCancelled {
            try? await Task.sleep(for: tick)
            sinceLast += tick
            let (requested, pending) = self.state.withLock { state in
                defer { state.refreshRequested = false }
                return (state.refreshRequested, !state.lost.isEmpty || state.assigned.values.contains { $0 == nil })
            }
            // While topics wait for an owner, the topology is read every 250 ms until it has changed.
            let due =
                (requested && sinceLast >= .milliseconds(100)) || (pending && sinceLast >= .milliseconds(250))
                || sinceLast >= self.configuration.topologyRefreshInterval
            guard due else {
                if requested { self.requestRefresh() }
                continue
            }
            sinceLast = .zero
            await self.refresh()
        }
    }

    private func refresh() async {
        let known = self.state.withLock { $0.topology }
        var candidates = known.nodes
        for seed in self.configuration.candidates where !candidates.contains(seed) { candidates.append(seed) }
        guard
            case .cluster(let topology)? = try? await RedisClusterTopology.discover(
                candidates,
                configuration: self.configuration,
                eventLoop: self.eventLoopGroup.next(),
                knownCluster: true
            )
        else { return }
        for primary in topology.primaries { _ = self.node(primary) }
        // Every topic whose slot has another owner now, or that its node dropped.
        let (moves, drops) = self.state.withLock { state -> ([RedisEndpoint: [String]], [RedisEndpoint: [String]]) in
            state.topology = topology
            var moves = [RedisEndpoint: [String]]()
            var drops = [RedisEndpoint: [String]]()
            for (topic, assigned) in state.assigned {
                let owner = topology.primary(for: HashSlot(key: topic))
                let isLost = state.lost.contains(topic)
                guard owner != assigned || isLost, let owner else { continue }
                if let assigned, !isLost { drops[assigned, default: []].append(topic) }
                state.assigned[topic] = .some(owner)
                state.lost.remove(topic)
                moves[owner, default: []].append(topic)
            }
            return (moves, drops)
        }
        for (endpoint, topics) in drops { self.node(endpoint).unsubscribe(topics) }
        guard !moves.isEmpty else { return }
        self.logger.info("Redis Cluster: topics move to a new owner", metadata: ["topics": "\(moves.values.reduce(0) { $0 + $1.count })"])
        await withTaskGroup(of: Void.self) { group in
            for (endpoint, topics) in moves {
                group.addTask {
                    // Unconfirmed (the node's connection is not up yet): that subscriber announces
                    // the topics itself once it has subscribed them.
                    if await self.node(endpoint).subscribe(topics) {
                        self.sink.yield(.resubscribed(topics: topics.sorted()))
                    }
                }
            }
        }
    }
}
