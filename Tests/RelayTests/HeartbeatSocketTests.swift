import Glibc
import NIOCore
import NIOPosix
import NIOWebSocket
import Synchronization
import TestSupport
import Testing

@testable import Relay

/// The heartbeat on a real loopback socket: a pong waits in the kernel under the socket's
/// low-water mark and is read at the next beat, past NIO, while anything else the client sends
/// reaches the pipeline at once, as NIO reads it.
@Suite("Heartbeat on a socket", .timeLimit(.minutes(1)))
struct HeartbeatSocketTests {
    /// What reached the pipeline: NIO's reads (before the frame reader), and the frames and
    /// silences after the heartbeat.
    final class Seen: Sendable {
        let nioReads = Atomic<Int>(0)
        let silences = Atomic<Int>(0)
        let frames = Mutex<[WebSocketOpcode]>([])
    }

    final class ReadCounter: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias InboundOut = ByteBuffer
        let seen: Seen
        init(_ seen: Seen) { self.seen = seen }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.seen.nioReads.add(1, ordering: .relaxed)
            context.fireChannelRead(data)
        }
    }

    final class Recorder: ChannelInboundHandler {
        typealias InboundIn = WebSocketFrame
        let seen: Seen
        init(_ seen: Seen) { self.seen = seen }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let opcode = Self.unwrapInboundIn(data).opcode
            self.seen.frames.withLock { $0.append(opcode) }
        }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if event is HeartbeatHandler.Silent { self.seen.silences.add(1, ordering: .relaxed) }
        }
    }

    /// The relay's reader and heartbeat on an accepted loopback socket, a pipeline of
    /// `ReadCounter`, reader, heartbeat, `Recorder`.
    func open(interval: Duration) async throws -> (ChannelOutputTests.Connection, NIOLoopBound<ChannelOutput>, Seen) {
        let connection = try await ChannelOutputTests.Connection.open(clientReceiveBuffer: 65_536)
        let seen = Seen()
        let heartbeats = Heartbeats(interval: interval)
        let channel = connection.channel
        // Accepted, but maybe not active yet: the heartbeat starts with an active channel, as
        // after an upgrade.
        for _ in 0..<1000 where !channel.isActive { try await Task.sleep(for: .milliseconds(2)) }
        try #require(channel.isActive)
        let output = try await channel.eventLoop.submit {
            let output = ChannelOutput(channel)
            let reader = WebSocketFrameReader(maxFrameSize: 1 << 16)
            let heartbeat = HeartbeatHandler(heartbeats: heartbeats, output: output)
            reader.heartbeat = heartbeat
            try channel.pipeline.syncOperations.addHandlers([ReadCounter(seen), reader, heartbeat, Recorder(seen)])
            return NIOLoopBound(output, eventLoop: channel.eventLoop)
        }.get()
        return (connection, output, seen)
    }

    /// Sends a client's (masked) frame from the plain socket.
    func send(_ connection: ChannelOutputTests.Connection, _ opcode: WebSocketOpcode, _ payload: [UInt8] = []) throws {
        let frame = RawWebSocket.clientFrame(opcode: UInt8(webSocketOpcode: opcode), payload: payload, mask: RawWebSocket.defaultMask)
        let sent = frame.withUnsafeBytes { Glibc.send(connection.client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == frame.count else { throw TestFailure("send(): errno \(errno)") }
    }

    /// Reads the next ping and answers it with a pong (6 bytes, masked, empty).
    func answerPing(_ connection: ChannelOutputTests.Connection) async throws {
        let ping = try await connection.read(count: 2)
        try #require(ping == [0x89, 0x00], "a ping: \(ping)")
        try self.send(connection, .pong)
    }

    @Test func pongsWaitInTheKernelAndAreReadAtTheNextBeat() async throws {
        let (connection, output, seen) = try await self.open(interval: .milliseconds(300))
        for _ in 0..<5 { try await self.answerPing(connection) }
        // The fifth pong waits for the sixth beat; the first four were read past NIO.
        _ = try await connection.read(count: 2)
        let receives = try await connection.onLoop(output) { $0.directReceives }
        #expect(receives >= 4, "pongs read past NIO: \(receives)")
        #expect(seen.nioReads.load(ordering: .relaxed) == 0, "no read of NIO's for a pong")
        #expect(seen.silences.load(ordering: .relaxed) == 0, "a client that answers is not silent")
        #expect(seen.frames.withLock { $0.isEmpty }, "pongs stop at the reader")
        await connection.close()
    }

    /// A frame under way when the mark goes up: its rest, 6 bytes shaped like a pong, is the
    /// frame's, and reaches the pipeline with it at the next beat.
    @Test func theRestOfAFrameUnderWayIsNeverTakenForAPong() async throws {
        let (connection, _, seen) = try await self.open(interval: .milliseconds(400))
        // A masked text frame of 4 bytes whose masking key ends 0x8A 0x80: its last 6 bytes
        // begin as a pong does.
        let mask: [UInt8] = [0x11, 0x22, 0x8A, 0x80]
        let payload = Array("pong".utf8).enumerated().map { $0.element ^ mask[$0.offset % 4] }
        let frame: [UInt8] = [0x81, 0x84] + mask + payload
        let sent = frame[..<4].withUnsafeBytes { Glibc.send(connection.client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        try #require(sent == 4)
        // The relay pings (the start of the frame read by then) and raises the mark.
        let ping = try await connection.read(count: 2)
        try #require(ping == [0x89, 0x00])
        let rest = frame[4...].withUnsafeBytes { Glibc.send(connection.client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        try #require(rest == 6)
        let deadline = ContinuousClock.now + .seconds(3)
        while seen.frames.withLock({ $0.isEmpty }), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(seen.frames.withLock { $0 } == [.text], "the frame, whole")
        await connection.close()
    }

    @Test func wholeEmptyPongsAreTold() {
        func pongs(_ bytes: [UInt8]) -> Bool { bytes.withUnsafeBytes { ChannelOutput.arePongs($0) } }
        #expect(pongs([0x8A, 0x80, 1, 2, 3, 4]))
        #expect(pongs([0x8A, 0x80, 1, 2, 3, 4, 0x8A, 0x80, 5, 6, 7, 8]))
        #expect(!pongs([]))
        #expect(!pongs([0x8A, 0x80, 1, 2, 3]), "not whole")
        #expect(!pongs([0x8A, 0x81, 1, 2, 3, 4]), "a payload")
        #expect(!pongs([0x89, 0x80, 1, 2, 3, 4]), "a ping")
        #expect(!pongs([0x8A, 0x00, 1, 2, 3, 4]), "unmasked")
        #expect(!pongs([0x8A, 0x80, 1, 2, 3, 4, 0x81, 0x80, 5, 6, 7, 8]), "a pong, then an empty text frame")
    }

    /// A frame with a payload wakes NIO although a pong is waiting; after it, even a frame of 6
    /// bytes (an empty ping) does, long before the next beat. A client that answers nothing
    /// more is silent after two intervals, as before.
    @Test func whatElseTheClientSendsReachesThePipelineAtOnce() async throws {
        let interval = Duration.seconds(3)
        let (connection, _, seen) = try await self.open(interval: interval)
        try await self.answerPing(connection)
        try await Task.sleep(for: .milliseconds(100))
        #expect(seen.nioReads.load(ordering: .relaxed) == 0, "the pong waits")

        // Reaches the pipeline before the next beat: a frame the beat read would come with the
        // beat's ping, which the client would then have waiting.
        func arrives(_ opcode: WebSocketOpcode, _ payload: [UInt8], _ what: String) async throws {
            let before = seen.frames.withLock { $0.count }
            try self.send(connection, opcode, payload)
            let deadline = ContinuousClock.now + interval * 2
            while seen.frames.withLock({ $0.count }) == before, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            let arrived = seen.frames.withLock { $0.count > before ? $0[before] : nil }
            #expect(arrived == opcode, "\(what) reached the pipeline")
            var byte: UInt8 = 0
            let waiting = Glibc.recv(connection.client, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
            #expect(waiting <= 0, "\(what) came before the next ping, not with it")
        }
        try await arrives(.text, Array("{}".utf8), "a text frame behind a waiting pong")
        try await arrives(.ping, [], "an empty ping after NIO's read")
        #expect(seen.nioReads.load(ordering: .relaxed) >= 2)

        // The next ping raises the mark again: an empty ping behind its pong wakes NIO too.
        try await self.answerPing(connection)
        try await Task.sleep(for: .milliseconds(100))
        let reads = seen.nioReads.load(ordering: .relaxed)
        try await arrives(.ping, [], "an empty ping behind a waiting pong")
        #expect(seen.nioReads.load(ordering: .relaxed) == reads + 1, "one read: the pong and the ping")

        // Silent from here: reported once nothing was heard for two intervals.
        let silentSince = ContinuousClock.now
        while seen.silences.load(ordering: .relaxed) == 0, ContinuousClock.now - silentSince < interval * 4 {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(seen.silences.load(ordering: .relaxed) == 1)
        #expect(ContinuousClock.now - silentSince >= interval * 2 - .milliseconds(500))
        await connection.close()
    }
}
