import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

@testable import Relay

/// The frame reader against NIO's `ByteToMessageHandler(WebSocketFrameDecoder)`, whose place it
/// takes: the same frames and the same errors for any bytes cut anywhere, except the pongs a
/// client sends as it must, which stop at the reader. And what it does besides: a read of pongs
/// alone goes no further than the reader, which asks for the next read itself.
@Suite("WebSocket frame reader")
struct WebSocketFrameReaderTests {
    /// A frame as a test compares it: its header's bits, its key, its payload unmasked.
    struct Decoded: Equatable, CustomStringConvertible {
        var fin: Bool
        var rsv: UInt8
        var opcode: UInt8
        var maskKey: [UInt8]?
        var payload: [UInt8]

        init(_ frame: WebSocketFrame) {
            self.fin = frame.fin
            self.rsv = frame.reservedBits.rawValue >> 4
            self.opcode = UInt8(webSocketOpcode: frame.opcode)
            self.maskKey = frame.maskKey.map { Array($0) }
            self.payload = Array(frame.unmaskedData.readableBytesView)
        }

        var description: String { "fin \(self.fin) rsv \(self.rsv) op \(self.opcode) key \(self.maskKey ?? []) \(self.payload.count) B" }

        /// A pong as a client must send it: the reader keeps it.
        var isCleanPong: Bool { self.opcode == 0xA && self.fin && self.rsv == 0 && self.maskKey != nil }
    }

    /// What a decoder made of some bytes: its frames, then its error, if any.
    struct Outcome: Equatable {
        var frames: [Decoded] = []
        var error: NIOWebSocketError?
    }

    /// Feeds `chunks` to a channel whose only handler is `handler`, one read each, until an error.
    func decode(_ chunks: [[UInt8]], with handler: some ChannelHandler) throws -> Outcome {
        let channel = EmbeddedChannel(handler: handler)
        defer { _ = try? channel.finish() }
        var outcome = Outcome()
        for chunk in chunks {
            do {
                try channel.writeInbound(ByteBuffer(bytes: chunk))
            } catch let error as NIOWebSocketError {
                outcome.error = error
            }
            while let frame = try channel.readInbound(as: WebSocketFrame.self) {
                outcome.frames.append(Decoded(frame))
            }
            if outcome.error != nil { break }
        }
        return outcome
    }

    /// A small, seeded generator: a failing case can be run again from its seed.
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            self.state &+= 0x9E37_79B9_7F4A_7C15
            var z = self.state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// A frame's bytes with any header a client could send: every opcode, reserved bits, masked
    /// or not, lengths on either side of each encoding's bounds, at times in a longer encoding
    /// than needed, and at times announcing more than the limit.
    static func randomFrame(maxFrameSize: Int, using random: inout Generator) -> [UInt8] {
        let opcode =
            UInt8.random(in: 0...2, using: &random) == 0
            ? UInt8.random(in: 0...15, using: &random) : [0x1, 0x2, 0x9, 0xA, 0x0, 0x8].randomElement(using: &random)!
        let fin = Int.random(in: 0..<6, using: &random) != 0
        let rsv: UInt8 = Int.random(in: 0..<6, using: &random) == 0 ? UInt8.random(in: 1...7, using: &random) : 0
        let masked = Int.random(in: 0..<6, using: &random) != 0
        let length: Int =
            switch Int.random(in: 0..<10, using: &random) {
            case 0: Int.random(in: 126...130, using: &random)
            case 1: Int.random(in: 0xFFFE...0x10001, using: &random)
            case 2: maxFrameSize + Int.random(in: -1...1, using: &random)
            default: Int.random(in: 0...125, using: &random)
            }
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | rsv << 4 | opcode]
        let maskBit: UInt8 = masked ? 0x80 : 0
        let longer = Int.random(in: 0..<8, using: &random) == 0
        if length <= 125 && !longer {
            bytes.append(maskBit | UInt8(length))
        } else if length <= 0xFFFF && !(longer && length > 125) {
            bytes += [maskBit | 126, UInt8(length >> 8), UInt8(length & 0xFF)]
        } else {
            bytes.append(maskBit | 127)
            bytes += (0..<8).reversed().map { UInt8((UInt64(length) >> (8 * UInt64($0))) & 0xFF) }
        }
        let key = (0..<4).map { _ in UInt8.random(in: 0...255, using: &random) }
        if masked { bytes += key }
        // The payload of a frame over the limit is never read: a few bytes of it stand for all.
        let sent = length > maxFrameSize ? min(length, 16) : length
        bytes += (0..<sent).map { index in UInt8(truncatingIfNeeded: index &* 31) ^ (masked ? key[index % 4] : 0) }
        return bytes
    }

    /// `bytes` cut into reads at random places, sometimes one byte at a time.
    static func randomChunks(_ bytes: [UInt8], using random: inout Generator) -> [[UInt8]] {
        var chunks: [[UInt8]] = []
        var start = 0
        // Byte by byte at times, but not through 64 KiB: a debug build would take its time.
        let small = bytes.count < 4096 && Int.random(in: 0..<3, using: &random) == 0
        while start < bytes.count {
            let size = small ? Int.random(in: 1...3, using: &random) : Int.random(in: 1...70_000, using: &random)
            let end = min(bytes.count, start + size)
            chunks.append(Array(bytes[start..<end]))
            start = end
        }
        return chunks
    }

    @Test func decodesWhatNIOsDecoderDoesWhereverTheBytesAreCut() throws {
        let maxFrameSize = 0x10000
        var seen = (frames: 0, pongs: 0, errors: Set<String>())
        for seed in UInt64(1)...300 {
            var random = Generator(state: seed)
            let frames = (0..<Int.random(in: 1...6, using: &random)).map { _ in
                Self.randomFrame(maxFrameSize: maxFrameSize, using: &random)
            }
            let chunks = Self.randomChunks(frames.flatMap { $0 }, using: &random)
            let expected = try self.decode(chunks, with: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxFrameSize)))
            let read = try self.decode(chunks, with: WebSocketFrameReader(maxFrameSize: maxFrameSize))
            var withoutPongs = expected
            withoutPongs.frames.removeAll(where: \.isCleanPong)
            #expect(read == withoutPongs, "seed \(seed)")
            seen.frames += read.frames.count
            seen.pongs += expected.frames.count - withoutPongs.frames.count
            if let error = expected.error { seen.errors.insert("\(error)") }
        }
        // The cases cover what they are meant to.
        #expect(seen.frames > 300 && seen.pongs > 20 && seen.errors.count == 3, "\(seen)")
    }

    @Test func eachLimitFailsAsNIOsDecoderFailsIt() throws {
        let maxFrameSize = 1000
        let cases: [([UInt8], NIOWebSocketError)] = [
            ([0x81, 0xFE, 0x03, 0xE9], .invalidFrameLength),  // 1,001 bytes announced in 16 bits
            ([0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0x03, 0xE9], .invalidFrameLength),  // and in 64
            ([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0], .invalidFrameLength),  // past Int.max
            ([0x09, 0x80, 1, 2, 3, 4], .fragmentedControlFrame),  // a ping without FIN
            ([0x8A, 0xFE, 0x00, 0x7E], .multiByteControlFrameLength),  // a 126-byte pong
        ]
        for (bytes, error) in cases {
            // Told as soon as the header is there: the payload need not follow.
            let expected = try self.decode([bytes], with: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxFrameSize)))
            #expect(expected.error == error, "NIO, \(bytes)")
            #expect(try self.decode([bytes], with: WebSocketFrameReader(maxFrameSize: maxFrameSize)) == expected, "\(bytes)")
        }
        // After the error, nothing more is read, not even a good frame.
        let after = try self.decode([cases[0].0, RawWebSocket.text("{}")], with: WebSocketFrameReader(maxFrameSize: maxFrameSize))
        #expect(after.frames.isEmpty && after.error == .invalidFrameLength)
    }

    @Test func onlyAPongAsAClientMustSendItStopsAtTheReader() throws {
        let key: [UInt8] = [1, 2, 3, 4]
        let clean = try self.decode(
            [RawWebSocket.clientFrame(opcode: 0xA, payload: [7, 8], mask: key)],
            with: WebSocketFrameReader(maxFrameSize: 1000)
        )
        #expect(clean == Outcome(), "a masked pong with no reserved bits stops")
        // The protocol handler fails these: the reader passes them on.
        for (bytes, what) in [
            (RawWebSocket.clientFrame(opcode: 0xA, payload: [7], mask: nil), "unmasked"),
            (RawWebSocket.clientFrame(opcode: 0xA, payload: [7], rsv: 4, mask: key), "RSV1"),
        ] {
            let outcome = try self.decode([bytes], with: WebSocketFrameReader(maxFrameSize: 1000))
            #expect(outcome.frames.map(\.opcode) == [0xA], "\(what): passed on")
        }
    }

    /// Counts the reads asked for from handlers after it, and the reads completed that reach it.
    final class ReadCounter: ChannelDuplexHandler {
        typealias InboundIn = Any
        typealias OutboundIn = Any
        var reads = 0
        var readsCompleted = 0
        func read(context: ChannelHandlerContext) {
            self.reads += 1
            context.read()
        }
        func channelReadComplete(context: ChannelHandlerContext) {
            self.readsCompleted += 1
            context.fireChannelReadComplete()
        }
    }

    @Test func aReadOfPongsAloneGoesNoFurtherAndAsksForTheNextRead() throws {
        let head = ReadCounter()
        let tail = ReadCounter()
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        try channel.pipeline.syncOperations.addHandlers([head, WebSocketFrameReader(maxFrameSize: 1000), tail])

        let pong = RawWebSocket.clientFrame(opcode: 0xA, payload: [1])
        try channel.writeInbound(ByteBuffer(bytes: pong + pong))
        #expect(tail.readsCompleted == 0, "a read of pongs ends at the reader")
        #expect(head.reads == 1, "which asks for the next read")
        #expect(try channel.readInbound(as: WebSocketFrame.self) == nil)

        // The start of a frame, alone, is the same.
        let text = RawWebSocket.text("{}")
        try channel.writeInbound(ByteBuffer(bytes: pong + text.prefix(3)))
        #expect(tail.readsCompleted == 0)
        #expect(head.reads == 2)

        // Its rest: the frame and its read's end go on, and the next read is asked for from
        // the tail (NIO's automatic read), where a handler may hold it back.
        try channel.writeInbound(ByteBuffer(bytes: text.dropFirst(3)))
        #expect(try channel.readInbound(as: WebSocketFrame.self).map { Decoded($0).payload } == Array("{}".utf8))
        #expect(tail.readsCompleted == 1)
        #expect(head.reads == 2)
    }

    /// Closes its channel on the first frame it is passed, and counts the frames.
    final class ClosingOnFirstFrame: ChannelInboundHandler {
        typealias InboundIn = WebSocketFrame
        var frames = 0
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.frames += 1
            context.close(promise: nil)
        }
    }

    /// A frame passed on may close the channel, which takes the reader out of the pipeline in the
    /// middle of its read: the rest of that read is dropped, not passed on to a closed channel.
    @Test func whatFollowsAFrameThatClosedTheChannelIsDropped() throws {
        let closer = ClosingOnFirstFrame()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([WebSocketFrameReader(maxFrameSize: 1000), closer])
        let text = RawWebSocket.text("{}")
        try channel.writeInbound(ByteBuffer(bytes: text + text + text))
        #expect(closer.frames == 1)
        #expect(!channel.isActive)
    }
}
