import NIOCore
import NIOEmbedded
import NIOWebSocket
import Synchronization
import Testing

@testable import Relay

/// The protocol handler on an embedded channel behind NIO's frame decoder, fed raw client
/// bytes: what it writes, what it passes on, when it closes the channel.
@Suite("WebSocketProtocol handler")
struct WebSocketProtocolHandlerTests {
    /// At the tail: records the messages and user events passed on, and channelInactive.
    final class TailRecorder: ChannelInboundHandler {
        typealias InboundIn = WebSocketInboundMessage

        var messages: [WebSocketInboundMessage] = []
        var inboundEvents: [Any] = []
        var inactive = false

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.messages.append(Self.unwrapInboundIn(data))
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            self.inboundEvents.append(event)
            context.fireUserInboundEventTriggered(event)
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.inactive = true
            context.fireChannelInactive()
        }
    }

    /// Before the protocol handler (where the heartbeat sits): records the outbound events it
    /// passes toward the head.
    final class HeadRecorder: ChannelOutboundHandler {
        typealias OutboundIn = ByteBuffer

        var outboundEvents: [Any] = []
        /// While set, writes are held here, as a socket whose client does not read holds them:
        /// not written, their promises pending, until ``release()``.
        var holding = false
        private var held: [(NIOAny, EventLoopPromise<Void>?)] = []
        private var context: ChannelHandlerContext?

        func handlerAdded(context: ChannelHandlerContext) {
            self.context = context
        }

        func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
            self.outboundEvents.append(event)
            context.triggerUserOutboundEvent(event, promise: promise)
        }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            guard self.holding else {
                context.write(data, promise: promise)
                return
            }
            self.held.append((data, promise))
        }

        func flush(context: ChannelHandlerContext) {
            if !self.holding { context.flush() }
        }

        /// Writes what was held, as a client that reads again lets it go.
        func release() {
            self.holding = false
            guard let context = self.context else { return }
            for (data, promise) in self.held { context.write(data, promise: promise) }
            self.held.removeAll()
            context.flush()
        }
    }

    /// An active channel: frame reader (64 KiB frames) → `head` recorder → protocol handler → `tail` recorder.
    struct Setup {
        let loop = EmbeddedEventLoop()
        let channel: EmbeddedChannel
        let head = HeadRecorder()
        let tail = TailRecorder()

        init(maxMessageBytes: Int = 64 * 1024) throws {
            self.channel = EmbeddedChannel(loop: self.loop)
            try self.channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
            try self.channel.pipeline.syncOperations.addHandlers([
                WebSocketFrameReader(maxFrameSize: 64 * 1024),
                self.head,
                WebSocketProtocolHandler(maxMessageBytes: maxMessageBytes, closeTimeout: .seconds(2), drainTimeout: .seconds(60)),
                self.tail,
            ])
        }

        func send(_ bytes: [UInt8]) throws {
            try self.channel.writeInbound(ByteBuffer(bytes: bytes))
        }

        /// The frames written so far.
        func written() throws -> [RawWebSocket.Frame] {
            var bytes: [UInt8] = []
            while let buffer = try self.channel.readOutbound(as: ByteBuffer.self) {
                bytes += buffer.readableBytesView
            }
            var frames: [RawWebSocket.Frame] = []
            while let frame = RawWebSocket.parse(&bytes) { frames.append(frame) }
            #expect(bytes.isEmpty, "whole frames only")
            return frames
        }

        /// The close codes of the `Closing` events passed toward the head.
        var closings: [UInt16?] {
            self.head.outboundEvents.compactMap { ($0 as? WebSocketProtocolHandler.Closing).map { $0.code } }
        }

        /// The close codes of the `Closing` events passed toward the tail (the connection handler,
        /// which writes its frames past the protocol handler, stops on them).
        var tailClosings: [UInt16?] {
            self.tail.inboundEvents.compactMap { ($0 as? WebSocketProtocolHandler.Closing).map { $0.code } }
        }

        var peerCloses: [UInt16?] {
            self.tail.inboundEvents.compactMap { ($0 as? WebSocketProtocolHandler.PeerClosed).map { $0.code } }
        }
    }

    func closeFrame(_ code: UInt16?) -> RawWebSocket.Frame {
        RawWebSocket.Frame(fin: true, rsv: 0, opcode: 0x8, masked: false, payload: code.map { [UInt8($0 >> 8), UInt8($0 & 0xFF)] } ?? [])
    }

    @Test func messagesGoOnAndPingsAreAnswered() throws {
        let setup = try Setup()
        try setup.send(RawWebSocket.text("{\"type\":", fin: false) + RawWebSocket.clientFrame(opcode: 0x9, payload: [7, 8, 9]))
        #expect(try setup.written() == [RawWebSocket.Frame(fin: true, rsv: 0, opcode: 0xA, masked: false, payload: [7, 8, 9])])
        try setup.send(RawWebSocket.clientFrame(opcode: 0x0, payload: Array("\"ping\"}".utf8)))
        try setup.send(RawWebSocket.clientFrame(opcode: 0x2, payload: [1, 2]))
        #expect(setup.tail.messages == [.text(ByteBuffer(string: "{\"type\":\"ping\"}")), .binary(ByteBuffer(bytes: [1, 2]))])

        // The connection handler's writes go out as they are.
        try setup.channel.writeOutbound(WebSocketWire.text("{\"type\":\"pong\"}"))
        #expect(try setup.written().map(\.text) == ["{\"type\":\"pong\"}"])
        #expect(setup.channel.isActive)
        #expect(setup.closings.isEmpty)
    }

    /// The client's close frame is told to the connection handler, which may still answer the
    /// frames before it; once it asks to close (whatever its code), the client's close frame is
    /// echoed and the channel closed.
    @Test func aClientCloseIsEchoedAndTheChannelClosed() throws {
        let setup = try Setup()
        try setup.send(RawWebSocket.close(code: 1000, reason: Array("bye".utf8)) + RawWebSocket.text("after"))
        #expect(setup.peerCloses == [1000])
        #expect(try setup.written().isEmpty, "not before the connection handler is done")
        setup.channel.writeAndFlush(WebSocketWire.text("an answer"), promise: nil)
        setup.channel.pipeline.triggerUserOutboundEvent(WebSocketProtocolHandler.Close(code: 1000), promise: nil)
        #expect(
            try setup.written() == [
                RawWebSocket.Frame(fin: true, rsv: 0, opcode: 0x1, masked: false, payload: Array("an answer".utf8)), closeFrame(1000),
            ]
        )
        #expect(setup.closings == [1000], "the heartbeat is told before the close frame goes out")
        #expect(setup.tailClosings == [1000], "and so is the connection handler")
        #expect(setup.tail.messages.isEmpty, "a frame after the close is ignored")
        #expect(!setup.channel.isActive)
        #expect(setup.tail.inactive, "channelInactive goes on")
    }

    /// A connection handler that never asks to close: the client's close frame is echoed after
    /// the close timeout.
    @Test func anEmptyCloseIsEchoedEmptyAtTheTimeoutAtTheLatest() throws {
        let setup = try Setup()
        try setup.send(RawWebSocket.close(code: nil))
        #expect(setup.peerCloses == [nil])
        setup.loop.advanceTime(by: .milliseconds(1900))
        #expect(try setup.written().isEmpty)
        setup.loop.advanceTime(by: .milliseconds(100))
        #expect(try setup.written() == [closeFrame(nil)])
        #expect(!setup.channel.isActive)
    }

    @Test func aServerCloseWaitsForTheClientsClose() throws {
        let setup = try Setup()
        let requested = setup.loop.makePromise(of: Void.self)
        setup.channel.pipeline.triggerUserOutboundEvent(
            WebSocketProtocolHandler.Close(code: 4001, reason: "token expired"),
            promise: requested
        )
        try requested.futureResult.wait()
        let frames = try setup.written()
        #expect(frames.map(\.closeCode) == [4001])
        #expect(frames.first?.payload.dropFirst(2).elementsEqual("token expired".utf8) == true)
        #expect(setup.closings == [4001])

        // Later writes are dropped, their promises failed; a second close is ignored.
        let write = setup.loop.makePromise(of: Void.self)
        setup.channel.writeAndFlush(WebSocketWire.text("late"), promise: write)
        #expect(throws: ChannelError.outputClosed) { try write.futureResult.wait() }
        setup.channel.pipeline.triggerUserOutboundEvent(WebSocketProtocolHandler.Close(code: 1001), promise: nil)
        #expect(try setup.written().isEmpty)

        // Client data is ignored, its pings unanswered, until its close frame.
        try setup.send(RawWebSocket.text("x") + RawWebSocket.clientFrame(opcode: 0x9))
        #expect(setup.tail.messages.isEmpty)
        #expect(try setup.written().isEmpty)
        #expect(setup.channel.isActive)
        try setup.send(RawWebSocket.close(code: 4001))
        #expect(!setup.channel.isActive)
        #expect(try setup.written().isEmpty, "the client's close is not answered again")
        #expect(setup.peerCloses.isEmpty, "the client did not begin the close")
    }

    @Test func aServerCloseWithoutAnAnswerTimesOut() throws {
        let setup = try Setup()
        setup.channel.pipeline.triggerUserOutboundEvent(WebSocketProtocolHandler.Close(code: 1001, reason: "going away"), promise: nil)
        #expect(try setup.written().map(\.closeCode) == [1001])
        setup.loop.advanceTime(by: .milliseconds(1_900))
        #expect(setup.channel.isActive, "not before the close timeout")
        setup.loop.advanceTime(by: .milliseconds(100))
        #expect(!setup.channel.isActive, "closed at the close timeout")
        #expect(setup.tail.inactive)
    }

    /// A close frame behind output the client has not read waits for it up to the drain timeout
    /// (60 s here): a client that reads again in time gets the frame (4008 for a slow consumer)
    /// rather than a cut connection, and then has the close timeout to answer it.
    @Test func aCloseFrameBehindUnreadOutputWaitsToBeWrittenThenForTheAnswer() throws {
        let setup = try Setup()
        setup.head.holding = true
        setup.channel.pipeline.triggerUserOutboundEvent(WebSocketProtocolHandler.Close(code: 4008, reason: "slow"), promise: nil)
        setup.loop.advanceTime(by: .seconds(59))
        #expect(setup.channel.isActive, "the close frame still waits to be written")
        setup.head.release()
        #expect(try setup.written().map(\.closeCode) == [4008])
        setup.loop.advanceTime(by: .milliseconds(1_900))
        #expect(setup.channel.isActive, "the close timeout counts from the frame's write")
        setup.loop.advanceTime(by: .milliseconds(100))
        #expect(!setup.channel.isActive, "closed at the close timeout")
    }

    /// A close frame that ends the connection at once (here failing it: an unmasked frame) is
    /// given only the close timeout to get out: the client has nothing more to read.
    @Test func aFailureCloseFrameThatCannotGetOutIsGivenUpOnAtTheCloseTimeout() throws {
        let setup = try Setup()
        setup.head.holding = true
        try setup.send(RawWebSocket.clientFrame(opcode: 0x1, payload: Array("hi".utf8), mask: nil))
        setup.loop.advanceTime(by: .milliseconds(1_900))
        #expect(setup.channel.isActive)
        setup.loop.advanceTime(by: .milliseconds(100))
        #expect(!setup.channel.isActive, "closed at the close timeout, not the drain timeout")
    }

    /// A close frame the client never lets out is given up on at the drain timeout.
    @Test func aCloseFrameNeverWrittenIsGivenUpOnAtTheDrainTimeout() throws {
        let setup = try Setup()
        setup.head.holding = true
        setup.channel.pipeline.triggerUserOutboundEvent(WebSocketProtocolHandler.Close(code: 4008, reason: "slow"), promise: nil)
        setup.loop.advanceTime(by: .milliseconds(59_900))
        #expect(setup.channel.isActive)
        setup.loop.advanceTime(by: .milliseconds(100))
        #expect(!setup.channel.isActive, "closed at the drain timeout")
        #expect(setup.tail.inactive)
    }

    /// Raw client bytes and the close code they must be failed with.
    static let failures: [(String, [UInt8], UInt16)] = [
        ("unmasked", RawWebSocket.clientFrame(opcode: 0x1, payload: Array("hi".utf8), mask: nil), 1002),
        ("rsv1 on text", RawWebSocket.clientFrame(opcode: 0x1, payload: [0x61], rsv: 4), 1002),
        ("rsv3 on a ping", RawWebSocket.clientFrame(opcode: 0x9, payload: [1], rsv: 1), 1002),
        ("opcode 3", RawWebSocket.clientFrame(opcode: 0x3), 1002),
        ("opcode 0xB", RawWebSocket.clientFrame(opcode: 0xB), 1002),
        ("continuation first", RawWebSocket.clientFrame(opcode: 0x0, payload: [0x61]), 1002),
        ("text in text", RawWebSocket.text("a", fin: false) + RawWebSocket.text("b"), 1002),
        ("126-byte ping (decoder)", RawWebSocket.clientFrame(opcode: 0x9, payload: [UInt8](repeating: 0, count: 126)), 1002),
        ("fragmented ping (decoder)", RawWebSocket.clientFrame(opcode: 0x9, payload: [1], fin: false), 1002),
        ("frame over 64 KiB (decoder)", RawWebSocket.clientFrame(opcode: 0x2, payload: [UInt8](repeating: 0, count: 64 * 1024 + 1)), 1009),
        (
            "fragments over 64 KiB",
            RawWebSocket.clientFrame(opcode: 0x2, payload: [UInt8](repeating: 0, count: 40_000), fin: false)
                + RawWebSocket.clientFrame(opcode: 0x0, payload: [UInt8](repeating: 0, count: 40_000)), 1009
        ),
        ("invalid UTF-8", RawWebSocket.clientFrame(opcode: 0x1, payload: [0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xED, 0xA0, 0x80]), 1007),
        ("close, 1 byte", RawWebSocket.clientFrame(opcode: 0x8, payload: [0x03]), 1002),
        ("close 1005", RawWebSocket.close(code: 1005), 1002),
        ("close reason not UTF-8", RawWebSocket.close(code: 1000, reason: [0xFF]), 1007),
    ]

    @Test(arguments: 0..<failures.count)
    func protocolFailuresCloseWithTheirCode(index: Int) throws {
        let (name, bytes, code) = Self.failures[index]
        let setup = try Setup()
        // Followed by a valid ping and text: neither may be answered nor passed on.
        try setup.send(bytes + RawWebSocket.clientFrame(opcode: 0x9, payload: [1]) + RawWebSocket.text("{\"type\":\"ping\"}"))
        let frames = try setup.written()
        #expect(frames.map(\.opcode) == [0x8], "\(name): one close frame and nothing else; got \(frames)")
        #expect(frames.first?.closeCode == code, "\(name)")
        #expect(frames.first.map { String(validating: $0.payload.dropFirst(2), as: UTF8.self) != nil } == true, "\(name): a UTF-8 reason")
        #expect(setup.tail.messages.isEmpty, "\(name)")
        #expect(setup.closings == [code], "\(name)")
        #expect(setup.tailClosings == [code], "\(name)")
        #expect(!setup.channel.isActive, "\(name): the channel is closed once the close frame is written")
    }

    struct Unrelated: Error {}

    @Test func theEndOfTheClientsSideOfTCPClosesTheChannel() throws {
        let setup = try Setup()
        try setup.send(RawWebSocket.text("{\"type\":\"ping\"}"))
        setup.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(setup.tail.messages == [.text(ByteBuffer(string: "{\"type\":\"ping\"}"))], "what came before is delivered")
        #expect(setup.tail.inboundEvents.contains { ($0 as? ChannelEvent) == .inputClosed }, "the event goes on")
        #expect(!setup.channel.isActive)
        #expect(setup.tail.inactive)
        #expect(try setup.written().isEmpty, "no close frame: nothing can answer it")
    }

    @Test func otherErrorsAndEventsGoOn() throws {
        let setup = try Setup()
        setup.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.outputClosed)
        #expect(setup.tail.inboundEvents.contains { ($0 as? ChannelEvent) == .outputClosed })
        setup.channel.pipeline.fireErrorCaught(Unrelated())
        #expect(throws: Unrelated.self) { try setup.channel.throwIfErrorCaught() }
        #expect(setup.channel.isActive)
        #expect(try setup.written().isEmpty)
    }
}
