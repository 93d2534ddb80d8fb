import NIOCore
import NIOWebSocket

/// Encodes server frames (RFC 6455 section 5.2): unmasked, no extensions.
///
/// The relay's WebSocket pipeline has no frame encoder: everything written after the upgrade is
/// a `ByteBuffer` holding complete frames made here, so that an event can be encoded once and
/// the same bytes written to every socket.
enum WebSocketWire {
    /// The close codes the relay's WebSocket layer sends (RFC 6455 section 7.4.1).
    enum CloseCode {
        static let normalClosure: UInt16 = 1000
        static let goingAway: UInt16 = 1001
        static let protocolError: UInt16 = 1002
        static let invalidPayload: UInt16 = 1007
        static let messageTooBig: UInt16 = 1009

        /// Whether a client may send `code` in a close frame: 1000–1003, 1007–1014 (registered
        /// with IANA for use in frames) and 3000–4999 (libraries and applications). 1004–1006
        /// and 1015 are reserved or must never be sent; below 1000, 1016–2999 and from 5000 on
        /// are not in use.
        static func isValidInFrame(_ code: UInt16) -> Bool {
            switch code {
            case 1000...1003, 1007...1014, 3000...4999: true
            default: false
            }
        }
    }

    /// The most a control frame's payload may hold (RFC 6455 section 5.5).
    static let maxControlPayload = 125

    /// The length of a frame's header for a payload of `length` bytes: 2, 4 or 10 bytes.
    static func headerLength(payloadLength length: Int) -> Int {
        length <= 125 ? 2 : length <= 0xFFFF ? 4 : 10
    }

    /// Writes the header of an unmasked frame with a payload of `length` bytes into `buffer`.
    /// - Precondition: a control opcode carries `fin` and at most 125 bytes.
    static func writeHeader(opcode: WebSocketOpcode, payloadLength length: Int, fin: Bool = true, into buffer: inout ByteBuffer) {
        precondition(length >= 0)
        precondition(!opcode.isControlOpcode || (fin && length <= Self.maxControlPayload), "invalid control frame")
        buffer.writeInteger((fin ? 0x80 : 0) | UInt8(webSocketOpcode: opcode))
        switch length {
        case 0...125:
            buffer.writeInteger(UInt8(length))
        case 126...0xFFFF:
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(length))
        default:
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(length))
        }
    }

    /// A complete unmasked frame carrying `payload` (none: empty).
    /// - Precondition: a control opcode carries `fin` and at most 125 bytes.
    static func frame(
        opcode: WebSocketOpcode,
        payload: ByteBuffer?,
        fin: Bool = true,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        let length = payload?.readableBytes ?? 0
        var buffer = allocator.buffer(capacity: Self.headerLength(payloadLength: length) + length)
        Self.writeHeader(opcode: opcode, payloadLength: length, fin: fin, into: &buffer)
        if let payload { buffer.writeImmutableBuffer(payload) }
        return buffer
    }

    /// A complete unmasked frame carrying `bytes`.
    /// - Precondition: a control opcode carries `fin` and at most 125 bytes.
    static func frame(
        opcode: WebSocketOpcode,
        bytes: some Collection<UInt8>,
        fin: Bool = true,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: Self.headerLength(payloadLength: bytes.count) + bytes.count)
        Self.writeHeader(opcode: opcode, payloadLength: bytes.count, fin: fin, into: &buffer)
        buffer.writeBytes(bytes)
        return buffer
    }

    /// A final text frame whose payload `write` appends: the payload is written once, after room
    /// for the longest header, and the header goes in front of it when its length is known.
    static func textFrame(capacity: Int = 128, _ write: (inout ByteBuffer) -> Void) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: 10 + capacity)
        buffer.moveWriterIndex(forwardBy: 10)
        write(&buffer)
        let length = buffer.writerIndex - 10
        let start = 10 - Self.headerLength(payloadLength: length)
        buffer.moveWriterIndex(to: start)
        Self.writeHeader(opcode: .text, payloadLength: length, into: &buffer)
        buffer.moveWriterIndex(to: 10 + length)
        buffer.moveReaderIndex(to: start)
        return buffer
    }

    /// A close frame: no payload when `code` is nil (the reason is then dropped: RFC 6455 allows
    /// a reason only after a code), else the code and as much of `reason` as fits in the 125
    /// bytes of a control frame, cut on a character boundary so that it stays valid UTF-8.
    static func close(code: UInt16?, reason: String = "", allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        guard let code else { return Self.frame(opcode: .connectionClose, payload: nil, allocator: allocator) }
        let reason = Self.truncated(reason, toUTF8Bytes: Self.maxControlPayload - 2)
        var buffer = allocator.buffer(capacity: 2 + 2 + reason.count)
        Self.writeHeader(opcode: .connectionClose, payloadLength: 2 + reason.count, into: &buffer)
        buffer.writeInteger(code)
        buffer.writeBytes(reason)
        return buffer
    }

    /// The UTF-8 of `string`, cut to at most `limit` bytes without splitting a code point.
    static func truncated(_ string: String, toUTF8Bytes limit: Int) -> String.UTF8View.SubSequence {
        let utf8 = string.utf8
        guard utf8.count > limit else { return utf8[...] }
        var end = utf8.index(utf8.startIndex, offsetBy: limit)
        // Back off continuation bytes (10xxxxxx): the cut then falls before a code point's first byte.
        while end > utf8.startIndex, utf8[end] & 0xC0 == 0x80 {
            end = utf8.index(before: end)
        }
        return utf8[utf8.startIndex..<end]
    }
}
