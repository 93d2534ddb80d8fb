import NIOCore
import NIOWebSocket

/// Reads client frames (RFC 6455 section 5.2) from the front of a buffer of a WebSocket's bytes.
///
/// A frame is read only once all of it is there; until then the buffer is left as it is, and the
/// caller adds what arrives next. A frame's header is checked as soon as it is there, with the
/// errors of NIO's `WebSocketFrameDecoder`: a frame over `maxFrameSize`, a fragmented control
/// frame, a control frame over 125 bytes. Everything else RFC 6455 asks of a frame (masked, no
/// reserved bits or opcodes) is ``WebSocketProtocolHandler``'s to check, except for a pong that
/// breaks none of it: it is read past and reported as ``Next/pong``, without a frame being made
/// (an idle connection's only traffic is pongs).
struct WebSocketFrameParser {
    /// What the front of the buffer holds.
    enum Next {
        /// Not all of the next frame yet.
        case needMoreData
        /// A whole frame, read from the buffer; its payload is a slice of the buffer, still masked.
        case frame(WebSocketFrame)
        /// A pong as a client must send it (final, masked, no reserved bits), read past.
        case pong
    }

    /// The largest payload accepted; a frame announcing more fails with `invalidFrameLength`.
    let maxFrameSize: Int

    /// Reads the next frame from the front of `buffer`, if all of it is there.
    /// - Throws: `NIOWebSocketError` once the frame's header breaks a limit; `buffer` is then
    ///   left as it was.
    func next(from buffer: inout ByteBuffer) throws(NIOWebSocketError) -> Next {
        let start = buffer.readerIndex
        guard let first = buffer.getInteger(at: start, as: UInt8.self),
            let second = buffer.getInteger(at: start + 1, as: UInt8.self)
        else { return .needMoreData }
        var offset = start + 2
        let length: Int
        switch second & 0x7F {
        case 126:
            guard let word = buffer.getInteger(at: offset, as: UInt16.self) else { return .needMoreData }
            length = Int(word)
            offset += 2
        case 127:
            guard let qword = buffer.getInteger(at: offset, as: UInt64.self) else { return .needMoreData }
            guard qword <= UInt64(Int.max) else { throw .invalidFrameLength }
            length = Int(qword)
            offset += 8
        case let short:
            length = Int(short)
        }
        try Self.check(firstByte: first, length: length, maxFrameSize: self.maxFrameSize)

        let masked = second & 0x80 != 0
        let keyOffset = offset
        if masked { offset += 4 }
        guard buffer.writerIndex - offset >= length else { return .needMoreData }

        // A final pong (0x8A), masked: all the protocol handler would do with it is nothing. Its
        // key is not made.
        if first == 0x8A, masked {
            buffer.moveReaderIndex(to: offset + length)
            return .pong
        }
        let maskKey = masked ? buffer.getInteger(at: keyOffset, as: UInt32.self).flatMap { WebSocketMaskingKey(KeyBytes($0)) } : nil
        buffer.moveReaderIndex(to: offset)
        let data = buffer.readSlice(length: length)!
        let frame = WebSocketFrame(
            fin: first & 0x80 != 0,
            rsv1: first & 0x40 != 0,
            rsv2: first & 0x20 != 0,
            rsv3: first & 0x10 != 0,
            opcode: WebSocketOpcode(encodedWebSocketOpcode: first & 0x0F)!,
            maskKey: maskKey,
            data: data
        )
        return .frame(frame)
    }

    /// The checks NIO's decoder makes once a frame's length is known, in its order.
    private static func check(firstByte: UInt8, length: Int, maxFrameSize: Int) throws(NIOWebSocketError) {
        if length > maxFrameSize { throw .invalidFrameLength }
        let isControl = firstByte & 0x08 != 0
        if isControl && firstByte & 0x80 == 0 { throw .fragmentedControlFrame }
        if isControl && length > WebSocketWire.maxControlPayload { throw .multiByteControlFrameLength }
    }
}

/// A masking key's four bytes, read as one integer, as the collection NIO's `WebSocketMaskingKey`
/// initializer takes: that initializer is generic and not specialized for the relay's types,
/// and reading a `ByteBufferView` through it allocated, several times per frame.
private struct KeyBytes: RandomAccessCollection {
    let word: UInt32

    init(_ word: UInt32) {
        self.word = word
    }

    var startIndex: Int { 0 }
    var endIndex: Int { 4 }

    /// The byte at `position`, in network order.
    subscript(position: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: self.word >> (24 - 8 * position))
    }
}
