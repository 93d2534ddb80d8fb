import Logging
import NIOCore
import NIOWebSocket
import RedisClient
import ServiceLifecycle
import Synchronization

/// One event as the hub hands it out: encoded once, the same bytes for every receiver.
struct LiveFrame: Sendable {
    /// The event's JSON.
    let json: ByteBuffer
    /// The whole WebSocket text frame carrying it (a server's frames are not masked, so one
    /// encoding serves every socket).
    let wire: ByteBuffer
    /// Whether the event makes someone join or leave the channel, read once for every socket.
    let membership: EventMembership?

    init(json: ByteBuffer) {
        self.json = json
        self.wire = WebSocketWire.frame(opcode: .text, payload: json)
        self.membership = EventMembership.of(json: json)
    }
}

/// What the hub hands to a local subscriber (a live connection).
enum LiveSignal: Sendable {
    /// An event of `channel`.
    case event(channel: String, seq: Int64, frame: LiveFrame)
    /// The subscription to `channel` was re-established: events may have been missed, so the
    /// receiver must compare with the log.
    case mayHaveMissed(channel: String)
    /// The user's set of channels changed (joined, added, removed), or may have while the
    /// user's topic was not subscribed.
    case channelsChanged
    /// The user was added to `channel` by its event `seq` (its own `member_joined`).
    case joined(channel: String, seq: Int64)
    /// The read cursor of the user's `session` in `channel` stands at `seq`, moved by the socket
    /// `connection` (`-`: over REST).
    case read(connection: String, session: String, channel: String, seq: Int64)
}

/// A local receiver of live signals. `receive` must not block: it writes to a socket or
/// queues what it gets, and does any slow work elsewhere.
protocol LiveReceiver: AnyObject, Sendable {
    /// The event loop `receive` is called on; `nil`: any thread (the subscriber connection's event loop).
    var eventLoop: (any EventLoop)? { get }
    func receive(_ signal: LiveSignal)
    /// Whether the receiver already has `channel`'s event `seq`, so that handing it the event
    /// would change nothing (its own message, written with its ack). Called from any thread.
    func alreadyHas(channel: String, seq: Int64) -> Bool
}

extension LiveReceiver {
    func alreadyHas(channel: String, seq: Int64) -> Bool { false }
}

/// One Redis subscription per channel per relay, however many local connections follow the
/// channel; each event is received once and handed, as the same bytes, to each of them.
final class FanoutHub: Service, Sendable {
    let subscriber: RedisSubscriber
    private let logger: Logger
    private let state = Mutex(State())

    struct State {
        /// Topic → receivers following it (a channel's or a user's topic).
        var followers: [String: Followers] = [:]
        /// Event loop → its hops not yet run; one per loop, shared by every topic.
        var backlogs: [ObjectIdentifier: LoopBacklog] = [:]
    }

    /// Hops queued on one event loop and not yet run, and the channels whose events were
    /// dropped for that loop meanwhile (its sockets fill them from the log).
    final class LoopBacklog: Sendable {
        let pending = Atomic<Int>(0)
        let lossy = Mutex<Set<String>>([])
    }

    /// The most receivers of one event loop that are asked ``LiveReceiver/alreadyHas(channel:seq:)``
    /// before a hop to that loop: enough for a DM's or a small group's, and no cost per socket in
    /// a large fan-out.
    static let maxReceiversAskedBeforeHop = 4

    /// Hops an event loop may have queued before the hub stops adding events for it: a loop
    /// that far behind gets the channels' `mayHaveMissed` instead, once it has caught up.
    let maxPendingHops: Int

    /// The receivers of one topic, grouped by the event loop they are called on, so that one
    /// event costs one hop per event loop, not one per receiver.
    struct Followers {
        /// The channel's name, for a channel's topic: one string, which every event of the
        /// channel carries and receivers may key their state by (``shared(_:)``).
        var channel: String?
        var byLoop: [ObjectIdentifier: (loop: any EventLoop, backlog: LoopBacklog, receivers: [ObjectIdentifier: any LiveReceiver])] = [:]
        var direct: [ObjectIdentifier: any LiveReceiver] = [:]

        var count: Int { self.direct.count + self.byLoop.values.reduce(0) { $0 + $1.receivers.count } }
        var isEmpty: Bool { self.direct.isEmpty && self.byLoop.isEmpty }

        mutating func insert(_ receiver: any LiveReceiver, backlogs: inout [ObjectIdentifier: LoopBacklog]) {
            let key = ObjectIdentifier(receiver)
            guard let loop = receiver.eventLoop else {
                self.direct[key] = receiver
                return
            }
            let loopKey = ObjectIdentifier(loop)
            if backlogs[loopKey] == nil { backlogs[loopKey] = LoopBacklog() }
            self.byLoop[loopKey, default: (loop, backlogs[loopKey]!, [:])].receivers[key] = receiver
        }

        mutating func remove(_ receiver: any LiveReceiver) {
            let key = ObjectIdentifier(receiver)
            guard let loop = receiver.eventLoop else {
                self.direct[key] = nil
                return
            }
            let loopKey = ObjectIdentifier(loop)
            self.byLoop[loopKey]?.receivers[key] = nil
            if self.byLoop[loopKey]?.receivers.isEmpty == true { self.byLoop[loopKey] = nil }
        }
    }

    private let metrics: RelayMetrics?

    init(subscriber: RedisSubscriber, logger: Logger, metrics: RelayMetrics? = nil, maxPendingHops: Int = 4096) {
        self.subscriber = subscriber
        self.logger = logger
        self.metrics = metrics
        self.maxPendingHops = maxPendingHops
        subscriber.deliverEvents { [weak self] event in self?.received(event) }
    }

    /// Starts handing `receiver` the events of `channels` and the notices for `user`.
    /// Returns once Redis confirmed the new subscriptions, or at once while the subscriber is
    /// not connected (at start-up, or while Redis is unreachable): when it is, each channel gets
    /// `mayHaveMissed` and the user `channelsChanged`.
    ///
    /// - Returns: `true` if every subscription is confirmed, so events published from now on arrive.
    @discardableResult
    func attach(_ receiver: any LiveReceiver, channels: some Sequence<String>, user: String? = nil) async -> Bool {
        var topics: [(topic: String, channel: String?)] = channels.map { (RelayKeys.Channel($0).topic, $0) }
        if let user { topics.append((RelayKeys.User(user).topic, nil)) }
        self.state.withLock { state in
            for (topic, channel) in topics {
                state.followers[topic, default: Followers(channel: channel)].insert(receiver, backlogs: &state.backlogs)
            }
        }
        // Sends SSUBSCRIBE only for topics not yet subscribed, and waits for any still unconfirmed,
        // another receiver's included: events published after this returns will arrive.
        return await self.subscriber.subscribe(topics.map(\.topic))
    }

    /// `channels` as the hub holds them while a receiver follows them (any other, as it is): the
    /// events of a channel carry one string for its name, and a receiver that keys its state by
    /// that string finds it by identity, without comparing bytes it has not touched for a while
    /// (in a fan-out, once per socket per event).
    func shared(_ channels: [String]) -> [String] {
        self.state.withLock { state in
            channels.map { state.followers[RelayKeys.Channel($0).topic]?.channel ?? $0 }
        }
    }

    /// Stops handing `receiver` the events of `channels` (and the notices for `user`); a topic
    /// no local receiver follows any more is unsubscribed.
    func detach(_ receiver: any LiveReceiver, channels: some Sequence<String>, user: String? = nil) {
        var topics = channels.map { RelayKeys.Channel($0).topic }
        if let user { topics.append(RelayKeys.User(user).topic) }
        let emptied = self.state.withLock { state in
            topics.filter { topic in
                state.followers[topic]?.remove(receiver)
                guard state.followers[topic]?.isEmpty == true else { return false }
                state.followers[topic] = nil
                return true
            }
        }
        if !emptied.isEmpty {
            self.subscriber.unsubscribe(emptied)
        }
    }

    /// How many local receivers follow a channel (for tests and metrics).
    func receiverCount(channel: String) -> Int {
        self.state.withLock { $0.followers[RelayKeys.Channel(channel).topic]?.count ?? 0 }
    }

    /// Runs the subscriber until shutdown; what it delivers is dispatched as it arrives.
    func run() async throws {
        try await self.subscriber.run()
    }

    /// Called by the subscriber, on its connection's event loop: one hop per other event loop
    /// with receivers, and no task in between.
    private func received(_ event: RedisSubscriberEvent) {
        switch event {
        case .message(let topic, let payload):
            self.dispatch(topic: topic, payload: payload)
        case .resubscribed(let topics):
            // What was published while the topics were not subscribed is lost: a channel's
            // events are in its log; a user's channel-set changes are read again.
            for topic in topics {
                if let channel = RelayKeys.channelID(fromTopic: topic) {
                    self.send(.mayHaveMissed(channel: String(channel)), to: topic)
                } else {
                    self.send(.channelsChanged, to: topic)
                }
            }
        }
    }

    private func dispatch(topic: String, payload: ByteBuffer) {
        // No local receiver (any more): nothing to decode or frame.
        guard let followers = self.state.withLock({ $0.followers[topic] }) else { return }
        guard let channel = followers.channel else {
            self.send(Self.userNotice(payload), to: followers, of: topic)
            return
        }
        // "<seq> <json>": the seq for ordering, the JSON as the frame, sliced not copied.
        guard let space = payload.readableBytesView.firstIndex(of: UInt8(ascii: " ")),
            let seq = Int64(String(decoding: payload.readableBytesView[payload.readerIndex..<space], as: UTF8.self)),
            let frame = payload.getSlice(at: space + 1, length: payload.writerIndex - space - 1)
        else {
            self.logger.warning("malformed live event", metadata: ["topic": "\(topic)"])
            return
        }
        // The channel's name as the hub shares it (``shared(_:)``).
        self.send(.event(channel: channel, seq: seq, frame: LiveFrame(json: frame)), to: followers, of: topic)
    }

    /// A notice on a user's topic: `joined <channel> <seq>`, `read <connection> <session>
    /// <channel> <seq>`, or anything else (`channels`) for "read your channels again".
    static func userNotice(_ payload: ByteBuffer) -> LiveSignal {
        let parts = String(buffer: payload).split(separator: " ")
        if parts.count == 3, parts[0] == "joined", let seq = Int64(parts[2]), Identifier.isValid(parts[1]) {
            return .joined(channel: String(parts[1]), seq: seq)
        }
        if parts.count == 5, parts[0] == "read", let seq = Int64(parts[4]), Identifier.isValid(parts[2]), Identifier.isValid(parts[3]) {
            return .read(connection: String(parts[1]), session: String(parts[2]), channel: String(parts[3]), seq: seq)
        }
        return .channelsChanged
    }

    private func send(_ signal: LiveSignal, to topic: String) {
        guard let followers = self.state.withLock({ $0.followers[topic] }) else { return }
        self.send(signal, to: followers, of: topic)
    }

    private func send(_ signal: LiveSignal, to followers: Followers, of topic: String) {
        for (loop, backlog, receivers) in followers.byLoop.values {
            // A sender's own message went out with its ack: no hop to its loop (it would only be
            // dropped there as a duplicate) unless another receiver there needs it.
            if case .event(let channel, let seq, _) = signal, !loop.inEventLoop,
                receivers.count <= Self.maxReceiversAskedBeforeHop,
                receivers.values.allSatisfy({ $0.alreadyHas(channel: channel, seq: seq) })
            {
                continue
            }
            // An event may be dropped for a loop that is far behind: the log has it, and its
            // sockets fill it in. Other signals (channel-set changes) have no log: never dropped.
            if case .event = signal, backlog.pending.load(ordering: .relaxed) >= self.maxPendingHops {
                backlog.lossy.withLock { _ = $0.insert(topic) }
                self.metrics?.shedEvent()
                // Should the loop have caught up in between, no hop is left to announce it.
                if backlog.pending.load(ordering: .relaxed) == 0 {
                    loop.execute { self.announceDropped(on: loop, backlog) }
                }
                continue
            }
            // On the subscriber's own loop, with nothing queued there before it, the receivers are
            // called at once: a hop would only queue the same work behind this read.
            if loop.inEventLoop, backlog.pending.load(ordering: .relaxed) == 0 {
                for receiver in receivers.values { receiver.receive(signal) }
                continue
            }
            backlog.pending.add(1, ordering: .relaxed)
            loop.execute {
                for receiver in receivers.values { receiver.receive(signal) }
                if backlog.pending.subtract(1, ordering: .relaxed).newValue == 0 {
                    self.announceDropped(on: loop, backlog)
                }
            }
        }
        for receiver in followers.direct.values {
            receiver.receive(signal)
        }
    }

    /// On `loop`, once it has caught up: tells its receivers of each channel whose events were
    /// dropped for it that they may have missed some.
    private func announceDropped(on loop: any EventLoop, _ backlog: LoopBacklog) {
        let topics = backlog.lossy.withLock { lossy in
            defer { lossy.removeAll() }
            return lossy
        }
        guard !topics.isEmpty else { return }
        let loopKey = ObjectIdentifier(loop)
        for topic in topics {
            guard let channel = RelayKeys.channelID(fromTopic: topic),
                let receivers = self.state.withLock({ $0.followers[topic]?.byLoop[loopKey]?.receivers })
            else { continue }
            let signal = LiveSignal.mayHaveMissed(channel: String(channel))
            for receiver in receivers.values { receiver.receive(signal) }
        }
    }
}
