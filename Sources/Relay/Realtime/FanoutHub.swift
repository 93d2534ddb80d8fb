import Logging
import NIOCore
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

    init(json: ByteBuffer) {
        self.json = json
        self.wire = Self.textFrame(json)
    }

    /// An unmasked, final WebSocket text frame (RFC 6455 section 5.2) with `payload`.
    static func textFrame(_ payload: ByteBuffer) -> ByteBuffer {
        let length = payload.readableBytes
        var frame = ByteBuffer()
        frame.reserveCapacity(10 + length)
        frame.writeInteger(UInt8(0x81))
        if length <= 125 {
            frame.writeInteger(UInt8(length))
        } else if length <= 0xFFFF {
            frame.writeInteger(UInt8(126))
            frame.writeInteger(UInt16(length))
        } else {
            frame.writeInteger(UInt8(127))
            frame.writeInteger(UInt64(length))
        }
        frame.writeImmutableBuffer(payload)
        return frame
    }
}

/// What the hub hands to a local subscriber (a live connection).
enum LiveSignal: Sendable {
    /// An event of `channel`.
    case event(channel: String, seq: Int64, frame: LiveFrame)
    /// The subscription to `channel` was re-established: events may have been missed, so the
    /// receiver must compare with the log.
    case mayHaveMissed(channel: String)
    /// The user's set of channels changed (joined, added, removed).
    case channelsChanged
}

/// A local receiver of live signals. `receive` must not block: it writes to a socket or
/// queues what it gets, and does any slow work elsewhere.
protocol LiveReceiver: AnyObject, Sendable {
    /// The event loop `receive` is called on; `nil`: any thread (the hub's task).
    var eventLoop: (any EventLoop)? { get }

    /// Handles `signal`.
    ///
    /// - Parameter deferringFlush: the caller, on the receiver's event loop, hands it more
    ///   signals and then calls ``flush()``: what it writes may wait for that.
    /// - Returns: `true` if it wrote and left the flush to ``flush()`` for the first time since
    ///   the last flush (so the caller collects each receiver to flush once).
    func receive(_ signal: LiveSignal, deferringFlush: Bool) -> Bool

    /// Flushes what ``receive(_:deferringFlush:)`` wrote; on the receiver's event loop.
    func flush()
}

extension LiveReceiver {
    /// Handles `signal`, flushing what it writes.
    func receive(_ signal: LiveSignal) {
        _ = self.receive(signal, deferringFlush: false)
    }
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
        /// Event loop → the signals queued for it; one per loop, shared by every topic.
        var backlogs: [ObjectIdentifier: LoopBacklog] = [:]
    }

    /// The signals queued for one event loop and not yet handed out, and the channels whose
    /// events were dropped for that loop meanwhile (its sockets fill them from the log).
    ///
    /// One hop to the loop hands out everything queued by then: under load, events arrive
    /// faster than the loop takes them, and each socket gets several in one write.
    final class LoopBacklog: Sendable {
        struct Queue {
            var signals: [(signal: LiveSignal, receivers: [ObjectIdentifier: any LiveReceiver])] = []
            var lossy: Set<String> = []
        }
        let queue = Mutex(Queue())
    }

    /// Events an event loop may have queued before the hub stops adding events for it: a loop
    /// that far behind gets the channels' `mayHaveMissed` instead, once it has caught up.
    let maxPendingHops: Int

    /// The receivers of one topic, grouped by the event loop they are called on, so that one
    /// event costs one hop per event loop, not one per receiver.
    struct Followers {
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
    }

    /// Starts handing `receiver` the events of `channels` and the notices for `user`.
    /// Returns once Redis confirmed the new subscriptions, or at once while the subscriber is
    /// not connected (at start-up, or while Redis is unreachable): when it is, each channel gets
    /// `mayHaveMissed` and the user `channelsChanged`.
    ///
    /// - Returns: `true` if every subscription is confirmed, so events published from now on arrive.
    @discardableResult
    func attach(_ receiver: any LiveReceiver, channels: some Sequence<String>, user: String? = nil) async -> Bool {
        var topics = channels.map { RelayKeys.Channel($0).topic }
        if let user { topics.append(RelayKeys.User(user).topic) }
        self.state.withLock { state in
            for topic in topics { state.followers[topic, default: Followers()].insert(receiver, backlogs: &state.backlogs) }
        }
        // Sends SSUBSCRIBE only for topics not yet subscribed, and waits for any still unconfirmed,
        // another receiver's included: events published after this returns will arrive.
        return await self.subscriber.subscribe(topics)
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

    /// How many signals are queued for `loop` and not yet handed out (for tests).
    func queuedSignals(on loop: any EventLoop) -> Int {
        guard let backlog = self.state.withLock({ $0.backlogs[ObjectIdentifier(loop)] }) else { return 0 }
        return backlog.queue.withLock { $0.signals.count }
    }

    /// How many local receivers follow a channel (for tests and metrics).
    func receiverCount(channel: String) -> Int {
        self.state.withLock { $0.followers[RelayKeys.Channel(channel).topic]?.count ?? 0 }
    }

    /// Runs the subscriber and dispatches what it delivers, until shutdown.
    func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await self.subscriber.run() }
            for await event in self.subscriber.events {
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
        }
    }

    private func dispatch(topic: String, payload: ByteBuffer) {
        if let channel = RelayKeys.channelID(fromTopic: topic) {
            // "<seq> <json>": the seq for ordering, the JSON as the frame, sliced not copied.
            guard let space = payload.readableBytesView.firstIndex(of: UInt8(ascii: " ")),
                let seq = Int64(String(decoding: payload.readableBytesView[payload.readerIndex..<space], as: UTF8.self)),
                let frame = payload.getSlice(at: space + 1, length: payload.writerIndex - space - 1)
            else {
                self.logger.warning("malformed live event", metadata: ["topic": "\(topic)"])
                return
            }
            self.send(.event(channel: String(channel), seq: seq, frame: LiveFrame(json: frame)), to: topic)
        } else {
            self.send(.channelsChanged, to: topic)
        }
    }

    private func send(_ signal: LiveSignal, to topic: String) {
        guard let followers = self.state.withLock({ $0.followers[topic] }) else { return }
        for (loop, backlog, receivers) in followers.byLoop.values {
            enum Action { case hop, queued, shed }
            let action: Action = backlog.queue.withLock { queue in
                // An event may be dropped for a loop that is far behind: the log has it, and its
                // sockets fill it in. Other signals (channel-set changes) have no log: never dropped.
                if case .event = signal, queue.signals.count >= self.maxPendingHops {
                    queue.lossy.insert(topic)
                    return .shed
                }
                queue.signals.append((signal, receivers))
                // The first signal queued takes the hop that hands out everything queued by then.
                return queue.signals.count == 1 ? .hop : .queued
            }
            switch action {
            case .hop: loop.execute { self.handOut(backlog, on: loop) }
            case .queued: break
            case .shed: self.metrics?.shedEvent()
            }
        }
        for receiver in followers.direct.values {
            receiver.receive(signal)
        }
    }

    /// On `loop`: hands its receivers everything queued for it, each socket's writes flushed
    /// once at the end; then tells the receivers of each channel whose events were dropped for
    /// the loop that they may have missed some.
    private func handOut(_ backlog: LoopBacklog, on loop: any EventLoop) {
        let (signals, lossy) = backlog.queue.withLock { queue in
            defer { queue = LoopBacklog.Queue() }
            return (queue.signals, queue.lossy)
        }
        if signals.count == 1, let (signal, receivers) = signals.first {
            for receiver in receivers.values { receiver.receive(signal) }
        } else {
            var unflushed: [any LiveReceiver] = []
            for (signal, receivers) in signals {
                for receiver in receivers.values where receiver.receive(signal, deferringFlush: true) {
                    unflushed.append(receiver)
                }
            }
            for receiver in unflushed { receiver.flush() }
        }
        guard !lossy.isEmpty else { return }
        let loopKey = ObjectIdentifier(loop)
        for topic in lossy {
            guard let channel = RelayKeys.channelID(fromTopic: topic),
                let receivers = self.state.withLock({ $0.followers[topic]?.byLoop[loopKey]?.receivers })
            else { continue }
            let signal = LiveSignal.mayHaveMissed(channel: String(channel))
            for receiver in receivers.values { receiver.receive(signal) }
        }
    }
}
