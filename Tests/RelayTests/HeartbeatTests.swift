import NIOCore
import NIOEmbedded
import NIOWebSocket
import Synchronization
import Testing

@testable import Relay

/// The heartbeat on an embedded channel behind the frame reader, as in the relay, whose clock
/// the test moves: pings every interval, pongs kept from the rest of the pipeline, silence
/// reported after two intervals and only once.
@Suite("Heartbeat")
struct HeartbeatTests {
    final class Silences: Sendable {
        let count = Atomic<Int>(0)
        /// The reads completed that reached the connection.
        let readsCompleted = Atomic<Int>(0)
    }

    /// Counts the heartbeat's ``HeartbeatHandler/Silent`` events, as the connection would see them.
    final class SilenceCounter: ChannelInboundHandler {
        typealias InboundIn = WebSocketFrame
        let silences: Silences
        init(_ silences: Silences) { self.silences = silences }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if event is HeartbeatHandler.Silent { self.silences.count.add(1, ordering: .relaxed) }
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            context.fireChannelRead(data)
        }
        func channelReadComplete(context: ChannelHandlerContext) {
            self.silences.readsCompleted.add(1, ordering: .relaxed)
        }
    }

    /// An active embedded channel with a frame reader and a heartbeat every `interval`, on `loop`.
    func channel(on loop: EmbeddedEventLoop, interval: Duration, silences: Silences) throws -> EmbeddedChannel {
        try self.channel(on: loop, heartbeats: Heartbeats(interval: interval), silences: silences)
    }

    func channel(on loop: EmbeddedEventLoop, heartbeats: Heartbeats, silences: Silences) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        let reader = WebSocketFrameReader(maxFrameSize: 1 << 16)
        let heartbeat = HeartbeatHandler(heartbeats: heartbeats, output: ChannelOutput(channel))
        reader.heartbeat = heartbeat
        try channel.pipeline.syncOperations.addHandlers([reader, heartbeat, SilenceCounter(silences)])
        return channel
    }

    /// A client's frame (masked), as it arrives.
    func frame(_ opcode: WebSocketOpcode, _ text: String = "", mask: [UInt8]? = RawWebSocket.defaultMask) -> ByteBuffer {
        ByteBuffer(bytes: RawWebSocket.clientFrame(opcode: UInt8(webSocketOpcode: opcode), payload: Array(text.utf8), mask: mask))
    }

    func pings(_ channel: EmbeddedChannel) throws -> Int {
        var count = 0
        while let frame = try channel.readOutbound(as: ByteBuffer.self) {
            #expect(Array(frame.readableBytesView) == [0x89, 0x00], "an empty, unmasked, final ping")
            count += 1
        }
        return count
    }

    @Test func pingsEveryIntervalAndKeepsPongsFromThePipeline() throws {
        let loop = EmbeddedEventLoop()
        let silences = Silences()
        let channel = try self.channel(on: loop, interval: .seconds(8), silences: silences)
        loop.advanceTime(by: .milliseconds(7_900))
        #expect(try pings(channel) == 0, "not before an interval")
        loop.advanceTime(by: .milliseconds(100))
        #expect(try pings(channel) == 1)

        try channel.writeInbound(frame(.pong))
        #expect(try channel.readInbound(as: WebSocketFrame.self) == nil, "a pong stops at the reader")
        #expect(silences.readsCompleted.load(ordering: .relaxed) == 0, "and so does a read of pongs alone")
        try channel.writeInbound(frame(.text, "{\"type\":\"ping\"}"))
        #expect(try channel.readInbound(as: WebSocketFrame.self)?.opcode == .text, "other frames go on")
        #expect(silences.readsCompleted.load(ordering: .relaxed) == 1, "with the end of their read")
        try channel.writeInbound(frame(.ping))
        #expect(try channel.readInbound(as: WebSocketFrame.self)?.opcode == .ping, "the client's pings go on, to be answered")
        try channel.writeInbound(frame(.pong, mask: nil))
        #expect(try channel.readInbound(as: WebSocketFrame.self)?.opcode == .pong, "an unmasked one goes on, to be refused")

        // Answered every time: pinged once per interval, never reported.
        for _ in 0..<5 {
            loop.advanceTime(by: .seconds(8))
            #expect(try pings(channel) == 1)
            try channel.writeInbound(frame(.pong))
        }
        #expect(silences.count.load(ordering: .relaxed) == 0)
        _ = try channel.finish()
    }

    @Test func silenceIsReportedAfterTwoIntervalsOnceAndPingsStop() throws {
        let loop = EmbeddedEventLoop()
        let silences = Silences()
        let channel = try self.channel(on: loop, interval: .seconds(8), silences: silences)
        loop.advanceTime(by: .seconds(8))
        #expect(try pings(channel) == 1)
        #expect(silences.count.load(ordering: .relaxed) == 0, "one interval of silence is not enough")
        loop.advanceTime(by: .seconds(8))
        #expect(silences.count.load(ordering: .relaxed) == 1, "two intervals of silence")
        #expect(try pings(channel) == 0)
        loop.advanceTime(by: .seconds(40))
        #expect(silences.count.load(ordering: .relaxed) == 1, "reported once")
        #expect(try pings(channel) == 0, "no pings after the silence")
        _ = try channel.finish()
    }

    @Test func connectionsOnOneLoopArePingedOnTheirOwnScheduleAndLeaveWhenClosed() throws {
        let loop = EmbeddedEventLoop()
        let silences = Silences()
        let heartbeats = Heartbeats(interval: .seconds(8))
        func open() throws -> EmbeddedChannel {
            try self.channel(on: loop, heartbeats: heartbeats, silences: silences)
        }
        let first = try open()
        loop.advanceTime(by: .seconds(3))
        let second = try open()
        // The first is due at 8 s, the second about an interval after it connected.
        loop.advanceTime(by: .seconds(5))
        #expect(try pings(first) == 1)
        #expect(try pings(second) == 0)
        loop.advanceTime(by: .seconds(3))
        #expect(try pings(second) == 1)
        try first.writeInbound(frame(.pong))
        try second.writeInbound(frame(.pong))

        // Closed: no more pings, no report. (Not `finish()`: it would run the shared loop's timers.)
        try first.close().wait()
        loop.advanceTime(by: .seconds(8))
        #expect(try pings(second) == 1)
        #expect(silences.count.load(ordering: .relaxed) == 0)
        _ = try second.finish()
    }

    /// While a handler after the heartbeat holds back reading the client's frames (answers
    /// waiting on a Redis that hangs), the client cannot be heard: it is pinged, never reported
    /// silent, and has two intervals from when reads go on again.
    @Test func aClientWhoseFramesAreNotReadIsNotSilent() throws {
        let loop = EmbeddedEventLoop()
        let silences = Silences()
        let channel = try self.channel(on: loop, interval: .seconds(5), silences: silences)
        channel.pipeline.triggerUserOutboundEvent(HeartbeatHandler.ReadsHeld(held: true), promise: nil)
        for _ in 0..<6 {
            loop.advanceTime(by: .seconds(5))
            #expect(try pings(channel) == 1, "pinged on")
        }
        #expect(silences.count.load(ordering: .relaxed) == 0, "not silent while its frames are not read")
        channel.pipeline.triggerUserOutboundEvent(HeartbeatHandler.ReadsHeld(held: false), promise: nil)
        loop.advanceTime(by: .seconds(5))
        #expect(silences.count.load(ordering: .relaxed) == 0, "an interval after reads went on")
        loop.advanceTime(by: .seconds(10))
        #expect(silences.count.load(ordering: .relaxed) == 1, "silent two intervals after")
    }

    @Test func aClosingConnectionIsPingedNoMore() throws {
        let loop = EmbeddedEventLoop()
        let silences = Silences()
        let channel = try self.channel(on: loop, interval: .seconds(8), silences: silences)
        loop.advanceTime(by: .seconds(8))
        #expect(try pings(channel) == 1)
        channel.pipeline.triggerUserOutboundEvent(WebSocketProtocolHandler.Closing(), promise: nil)
        loop.advanceTime(by: .seconds(40))
        #expect(try pings(channel) == 0, "no ping after the close frame")
        #expect(silences.count.load(ordering: .relaxed) == 0, "nor a silence report")
        _ = try channel.finish()
    }
}
