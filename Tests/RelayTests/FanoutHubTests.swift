import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOPosix
import RedisClient
import Synchronization
import TestSupport
import Testing

@testable import Relay

/// Records what the hub hands it.
final class RecordingReceiver: LiveReceiver {
    private let signals = Mutex<[LiveSignal]>([])
    let eventLoop: (any EventLoop)?

    init(eventLoop: (any EventLoop)? = nil) {
        self.eventLoop = eventLoop
    }

    /// Receptions off the receiver's event loop (must stay 0).
    let offLoop = Atomic<Int>(0)

    /// The receiver already has every event up to this seq (as a socket has its own message).
    let hasUpTo = Atomic<Int64>(0)

    func alreadyHas(channel: String, seq: Int64) -> Bool {
        seq <= self.hasUpTo.load(ordering: .relaxed)
    }

    func receive(_ signal: LiveSignal) {
        if let eventLoop, !eventLoop.inEventLoop { self.offLoop.add(1, ordering: .relaxed) }
        self.signals.withLock { $0.append(signal) }
    }

    var events: [(channel: String, seq: Int64, json: String)] {
        self.signals.withLock { signals in
            signals.compactMap { signal in
                if case .event(let channel, let seq, let frame) = signal { return (channel, seq, String(buffer: frame.json)) }
                return nil
            }
        }
    }

    /// The channels of the `mayHaveMissed` signals received after the first event with `seq`.
    func missed(after seq: Int64) -> [String] {
        self.signals.withLock { signals in
            let start = signals.firstIndex { if case .event(_, seq, _) = $0 { true } else { false } }
            guard let start else { return [] }
            return signals[start...].compactMap { signal in
                if case .mayHaveMissed(let channel) = signal { return channel }
                return nil
            }
        }
    }

    var channelsChanged: Int {
        self.signals.withLock { signals in
            signals.count { if case .channelsChanged = $0 { true } else { false } }
        }
    }
}

@Suite("Fan-out hub against redis-server", .timeLimit(.minutes(1)))
struct FanoutHubTests {
    func withHub(
        url: String,
        maxPendingHops: Int = 4096,
        metrics: RelayMetrics? = nil,
        _ body: (FanoutHub, RedisClient) async throws -> Void
    ) async throws {
        var configuration = try RedisConfiguration(url: url)
        configuration.minimumBackoff = .milliseconds(20)
        configuration.maximumBackoff = .milliseconds(200)
        let hub = FanoutHub(
            subscriber: RedisSubscriber(configuration: configuration),
            logger: Logger(label: "test"),
            metrics: metrics,
            maxPendingHops: maxPendingHops
        )
        let client = RedisClient(configuration: configuration)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await hub.run() }
            group.addTask { try await client.run() }
            defer { group.cancelAll() }
            try await body(hub, client)
        }
    }

    func shardSubscribers(_ client: RedisClient, _ topic: String) async throws -> Int64? {
        try await client.execute("PUBSUB", "SHARDNUMSUB", topic).array?.last?.int
    }

    func waitUntil(_ what: String, _ condition: () async throws -> Bool) async throws {
        for _ in 0..<500 {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure("timed out waiting until \(what)")
    }

    /// Until the subscriber's first connection is up, `attach` returns at once, unconfirmed:
    /// waits until a new channel's subscription is confirmed. Returns that channel's receiver.
    @discardableResult
    func waitUntilConnected(_ hub: FanoutHub) async throws -> RecordingReceiver {
        let receiver = RecordingReceiver()
        try await waitUntil("a subscription is confirmed") {
            await hub.attach(receiver, channels: [TestRedis.uniqueName("c")])
        }
        return receiver
    }

    /// A receiver keys its state by the channel names the hub shares: every event of the
    /// channel carries that very string (the same storage, not only the same bytes).
    @Test func eventsCarryTheChannelNameTheHubShares() async throws {
        func sameStorage(_ a: String, _ b: String) -> Bool {
            unsafeBitCast(a, to: (UInt64, UInt64).self) == unsafeBitCast(b, to: (UInt64, UInt64).self)
        }
        // Two strings of the same name, each in storage of its own (longer than a small string).
        let name = TestRedis.uniqueName("a-channel-name-of-some-length")
        let first = String(decoding: Array(name.utf8), as: UTF8.self)
        let second = String(decoding: Array(name.utf8), as: UTF8.self)
        #expect(first == second && !sameStorage(first, second))
        let topic = RelayKeys.Channel(name).topic
        try await withHub(url: TestRedis.url) { hub, client in
            let receivers = [RecordingReceiver(eventLoop: MultiThreadedEventLoopGroup.singleton.next()), RecordingReceiver()]
            await hub.attach(receivers[0], channels: [first])
            await hub.attach(receivers[1], channels: [second])
            let shared = hub.shared([second, "not-followed"])
            #expect(shared == [name, "not-followed"])
            #expect(sameStorage(shared[0], first), "the first follower's string")
            try await waitUntil("the hub subscribes") { try await shardSubscribers(client, topic) == 1 }
            try await client.shardPublish(topic, "1 {\"seq\":1}")
            try await waitUntil("both receivers have the event") { receivers.allSatisfy { $0.events.count == 1 } }
            for receiver in receivers {
                #expect(sameStorage(receiver.events[0].channel, shared[0]))
            }
            for receiver in receivers { hub.detach(receiver, channels: [name]) }
        }
    }

    @Test func oneSubscriptionServesEveryLocalReceiverWithTheSameBytes() async throws {
        let channel = TestRedis.uniqueName("c")
        let topic = RelayKeys.Channel(channel).topic
        try await withHub(url: TestRedis.url) { hub, client in
            // Two bound to event loops (as sockets are), one called from the hub's task.
            let loops = MultiThreadedEventLoopGroup.singleton
            let receivers = [RecordingReceiver(eventLoop: loops.next()), RecordingReceiver(eventLoop: loops.next()), RecordingReceiver()]
            for receiver in receivers { await hub.attach(receiver, channels: [channel]) }
            // Until the subscriber's first connection is up, attach returns at once.
            try await waitUntil("the hub subscribes") { try await shardSubscribers(client, topic) == 1 }
            #expect(hub.receiverCount(channel: channel) == 3)

            for seq in 1...20 { try await client.shardPublish(topic, "\(seq) {\"seq\":\(seq)}") }
            try await waitUntil("every receiver has 20 events") { receivers.allSatisfy { $0.events.count == 20 } }
            for receiver in receivers {
                #expect(receiver.events.map(\.seq) == Array(1...20))
                #expect(receiver.events.map(\.json) == (1...20).map { "{\"seq\":\($0)}" })
                #expect(receiver.events.allSatisfy { $0.channel == channel })
                #expect(receiver.offLoop.load(ordering: .relaxed) == 0, "called on its own event loop")
            }

            hub.detach(receivers[0], channels: [channel])
            hub.detach(receivers[1], channels: [channel])
            #expect(try await shardSubscribers(client, topic) == 1, "one receiver still follows the channel")
            hub.detach(receivers[2], channels: [channel])
            try await waitUntil("the topic is unsubscribed") { try await shardSubscribers(client, topic) == 0 }
            try await client.shardPublish(topic, "21 {}")
            try await Task.sleep(for: .milliseconds(100))
            #expect(receivers[2].events.count == 20)
        }
    }

    /// A loop whose every receiver already has an event (a sender's own message, written with
    /// its ack) gets no hop for it; a loop where one receiver lacks it gets it for all.
    @Test func noHopToALoopWhoseReceiversAlreadyHaveTheEvent() async throws {
        let channel = TestRedis.uniqueName("c")
        let topic = RelayKeys.Channel(channel).topic
        // Loops of their own: the subscriber's loop calls its receivers directly.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        defer { group.shutdownGracefully { _ in } }
        let loops = Array(group.makeIterator())
        try await withHub(url: TestRedis.url) { hub, client in
            let sender = RecordingReceiver(eventLoop: loops[0])
            let otherSender = RecordingReceiver(eventLoop: loops[1])
            let reader = RecordingReceiver(eventLoop: loops[1])
            for receiver in [sender, otherSender, reader] {
                receiver.hasUpTo.store(3, ordering: .relaxed)
                await hub.attach(receiver, channels: [channel])
            }
            reader.hasUpTo.store(0, ordering: .relaxed)
            try await waitUntil("the hub subscribes") { try await shardSubscribers(client, topic) == 1 }

            for seq in 1...5 { try await client.shardPublish(topic, "\(seq) {}") }
            try await waitUntil("the reader has every event") { reader.events.count == 5 }
            try await waitUntil("the sender has the events it lacked") { sender.events.map(\.seq).contains(5) }
            #expect(sender.events.map(\.seq) == [4, 5], "no hop for what it has")
            #expect(reader.events.map(\.seq) == [1, 2, 3, 4, 5])
            #expect(otherSender.events.map(\.seq) == [1, 2, 3, 4, 5], "its loop's hop serves the reader too")
            for receiver in [sender, otherSender, reader] { #expect(receiver.offLoop.load(ordering: .relaxed) == 0) }
        }
    }

    /// What a connection answers the hub: every event of the channel of its last own message,
    /// up to that message, and nothing of another channel or later.
    @Test func aConnectionHasItsChannelUpToTheLastMessageItWroteWithItsAck() throws {
        let loop = EmbeddedEventLoop()
        let identity = LiveConnectionHandler.Identity(user: "alice", session: "default", expiresAt: .max)
        let handler = LiveConnectionHandler(
            identity: identity,
            services: try WebSocketPipelineTests().services(),
            output: ChannelOutput(EmbeddedChannel(loop: loop))
        )
        let connection = LiveConnection(handler: handler, eventLoop: loop)
        #expect(!connection.alreadyHas(channel: "c1", seq: 1), "nothing written yet")
        connection.wroteOwnEvent(channel: "c1", seq: 7)
        #expect(connection.alreadyHas(channel: "c1", seq: 7))
        #expect(connection.alreadyHas(channel: "c1", seq: 3))
        #expect(!connection.alreadyHas(channel: "c1", seq: 8))
        #expect(!connection.alreadyHas(channel: "c2", seq: 7))
        connection.wroteOwnEvent(channel: "c2", seq: 2)
        #expect(!connection.alreadyHas(channel: "c1", seq: 7), "only the last own message's channel is known")
        #expect(connection.alreadyHas(channel: "c2", seq: 2))
    }

    @Test func userNoticesReachThatUsersReceivers() async throws {
        let user = TestRedis.uniqueName("u")
        try await withHub(url: TestRedis.url) { hub, client in
            // Attached on a live connection: no reconnect tells them to read their channels again.
            try await waitUntilConnected(hub)
            let mine = RecordingReceiver()
            let other = RecordingReceiver()
            #expect(await hub.attach(mine, channels: [], user: user))
            #expect(await hub.attach(other, channels: [], user: TestRedis.uniqueName("u")))
            await RealtimeNotifier(redis: client).channelsChanged(for: [user])
            try await waitUntil("the notice arrives") { mine.channelsChanged == 1 }
            #expect(other.channelsChanged == 0)
        }
    }

    @Test func aLostSubscriptionTellsEveryReceiverOfTheChannel() async throws {
        let server = try RedisServerProcess()
        let channel = TestRedis.uniqueName("c")
        let topic = RelayKeys.Channel(channel).topic
        try await withHub(url: server.url) { hub, client in
            let receiver = RecordingReceiver()
            await hub.attach(receiver, channels: [channel])
            // A publish made before the subscription is confirmed is lost, so keep publishing.
            try await waitUntil("the first event arrives") {
                try await client.shardPublish(topic, "1 {}")
                return receiver.events.map(\.seq).contains(1)
            }
            try await client.execute("CLIENT", "KILL", "TYPE", "pubsub")
            // The hub's first connection may also have announced a resubscription; only a signal
            // that follows event 1 can come from the killed connection.
            try await waitUntil("the receiver hears it may have missed events") {
                receiver.missed(after: 1).contains(channel)
            }
            try await waitUntil("events flow again") {
                try await client.shardPublish(topic, "7 {}")
                return receiver.events.map(\.seq).contains(7)
            }
        }
    }

    /// A user's notices have no log: after a lost subscription, the user's receivers are told to
    /// read their channels again. `attach` says whether its subscriptions are confirmed.
    @Test func aLostSubscriptionTellsTheUsersReceiversToReadTheirChannelsAgain() async throws {
        let server = try RedisServerProcess()
        let user = TestRedis.uniqueName("u")
        try await withHub(url: server.url) { hub, client in
            let warmUp = try await waitUntilConnected(hub)
            let receiver = RecordingReceiver()
            #expect(await hub.attach(receiver, channels: [], user: user), "confirmed on a live connection")
            #expect(receiver.channelsChanged == 0)
            try await client.execute("CLIENT", "KILL", "TYPE", "pubsub")
            try await waitUntil("the receiver is told to read its channels again") { receiver.channelsChanged == 1 }
            #expect(warmUp.channelsChanged == 0, "a channel's receiver gets mayHaveMissed instead")
        }
    }

    @Test func malformedPayloadsAreDroppedNotDelivered() async throws {
        let channel = TestRedis.uniqueName("c")
        let topic = RelayKeys.Channel(channel).topic
        try await withHub(url: TestRedis.url) { hub, client in
            let receiver = RecordingReceiver()
            await hub.attach(receiver, channels: [channel])
            try await waitUntil("the hub subscribes") { try await shardSubscribers(client, topic) == 1 }
            try await client.shardPublish(topic, "no-seq-here")
            try await client.shardPublish(topic, "x {}")
            try await client.shardPublish(topic, "3 {\"ok\":true}")
            try await waitUntil("the good event arrives") { !receiver.events.isEmpty }
            #expect(receiver.events.map(\.seq) == [3])
        }
    }

    @Test(arguments: [0, 1, 125, 126, 127, 65_535, 65_536, 200_000])
    func aPreEncodedFrameIsOneUnmaskedFinalTextFrame(length: Int) {
        let payload = ByteBuffer(bytes: (0..<length).map { UInt8(truncatingIfNeeded: $0 * 7) })
        let wire = LiveFrame(json: payload).wire
        let bytes = Array(wire.readableBytesView)
        #expect(bytes.first == 0x81, "FIN and text")
        #expect(bytes[1] & 0x80 == 0, "not masked")
        let frames = StalledSocket.frames(in: bytes)
        #expect(frames.count == 1)
        #expect(frames.first?.opcode == 0x1)
        #expect(frames.first?.payload == Array(payload.readableBytesView))
        let header = length <= 125 ? 2 : (length <= 65_535 ? 4 : 10)
        #expect(bytes.count == header + length, "the shortest length encoding")
    }

    /// A receiver's event loop that falls behind gets no more than the bound of queued events;
    /// once it has caught up it hears which channels may have missed some (the log has them).
    @Test func aLoopFarBehindGetsMayHaveMissedInsteadOfAnUnboundedQueue() async throws {
        let channel = TestRedis.uniqueName("c")
        let topic = RelayKeys.Channel(channel).topic
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        defer { group.shutdownGracefully { _ in } }
        let metrics = RelayMetrics()
        try await withHub(url: TestRedis.url, maxPendingHops: 3, metrics: metrics) { hub, client in
            let receiver = RecordingReceiver(eventLoop: loop)
            await hub.attach(receiver, channels: [channel])
            try await waitUntil("the first event arrives") {
                try await client.shardPublish(topic, "1 {}")
                return receiver.events.map(\.seq).contains(1)
            }
            // A marker last: once it is in, no repeat of the first event is still on its way
            // (one subscription delivers in order), however slow the machine.
            try await client.shardPublish(topic, "1000 {}")
            try await waitUntil("the marker arrives") { receiver.events.map(\.seq).contains(1000) }
            let before = receiver.events.count
            func shed() -> Int {
                let text = String(decoding: metrics.render(), as: UTF8.self)
                let line = text.split(separator: "\n").first { $0.hasPrefix("relay_fanout_events_shed_total ") }
                return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
            }
            let shedBefore = shed()

            // Hold the loop while ten events arrive.
            let release = Mutex<Bool>(false)
            loop.execute {
                let deadline = ContinuousClock.now + .seconds(10)
                while !release.withLock({ $0 }) && ContinuousClock.now < deadline { usleep(1000) }
            }
            for seq in 2...11 { try await client.shardPublish(topic, "\(seq) {}") }
            // Three hops queue; the hub drops the other seven for this loop.
            try await waitUntil("the hub has seen every event") { shed() - shedBefore >= 7 }
            #expect(shed() - shedBefore == 7)
            release.withLock { $0 = true }

            try await waitUntil("the receiver hears it may have missed events") { receiver.missed(after: 4) == [channel] }
            #expect(receiver.events.dropFirst(before).map(\.seq) == [2, 3, 4], "three queued hops, the rest dropped for this loop")
            try await client.shardPublish(topic, "12 {}")
            try await waitUntil("events flow again") { receiver.events.map(\.seq).contains(12) }
            #expect(receiver.offLoop.load(ordering: .relaxed) == 0)
        }
    }
}
