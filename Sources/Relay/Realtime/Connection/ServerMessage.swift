import NIOCore
import NIOWebSocket

/// What the relay says to a WebSocket client besides events (contract section 5), encoded from
/// its fields: whatever a client sent comes back only as a quoted, bounded string.
enum ServerMessage: Equatable, Sendable {
    case hello(user: String, session: String, connection: String, heartbeatMilliseconds: Int64)
    case pong
    case ack(clientMessageID: String, channel: String, seq: Int64, messageID: String)
    case readOK(channel: String, lastReadSeq: Int64)
    case resumed(truncated: [String: Int64])
    case error(code: APIError.Code, message: String, channel: String? = nil, clientMessageID: String? = nil)

    /// Client input echoed in an error is cut to this many bytes (on a character boundary).
    static let maxEcho = 128

    /// The message as the JSON text of one frame.
    var json: String {
        var buffer = ByteBuffer()
        self.writeJSON(to: &buffer)
        return String(buffer: buffer)
    }

    /// The message as a whole text frame, encoded in one buffer.
    var frame: ByteBuffer {
        WebSocketWire.textFrame { self.writeJSON(to: &$0) }
    }

    /// The message's frame followed by a text frame of `json` (an event after its ack), in one
    /// buffer: one allocation and one write for both.
    func frame(followedBy json: String) -> ByteBuffer {
        let length = json.utf8.count
        var buffer = WebSocketWire.textFrame(capacity: 128 + WebSocketWire.headerLength(payloadLength: length) + length) {
            self.writeJSON(to: &$0)
        }
        WebSocketWire.writeHeader(opcode: .text, payloadLength: length, into: &buffer)
        buffer.writeString(json)
        return buffer
    }

    /// Appends the message's JSON to `buffer`.
    func writeJSON(to buffer: inout ByteBuffer) {
        switch self {
        case .hello(let user, let session, let connection, let heartbeat):
            buffer.writeStaticString("{\"type\":\"hello\"")
            buffer.writeField("user_id", quoting: user)
            buffer.writeField("session_id", quoting: session)
            buffer.writeField("connection_id", quoting: connection)
            buffer.writeField("heartbeat_ms", heartbeat)
        case .pong:
            buffer.writeStaticString("{\"type\":\"pong\"")
        case .ack(let clientMessageID, let channel, let seq, let messageID):
            buffer.writeStaticString("{\"type\":\"ack\"")
            buffer.writeField("client_msg_id", quoting: clientMessageID)
            buffer.writeField("channel_id", quoting: channel)
            buffer.writeField("seq", seq)
            buffer.writeField("message_id", quoting: messageID)
        case .readOK(let channel, let last):
            buffer.writeStaticString("{\"type\":\"read_ok\"")
            buffer.writeField("channel_id", quoting: channel)
            buffer.writeField("last_read_seq", last)
        case .resumed(let truncated):
            buffer.writeStaticString("{\"type\":\"resumed\"")
            if !truncated.isEmpty {
                buffer.writeStaticString(",\"truncated\":{")
                for (index, entry) in truncated.sorted(by: { $0.key < $1.key }).enumerated() {
                    if index > 0 { buffer.writeStaticString(",") }
                    JSONText.writeQuoted(entry.key, to: &buffer)
                    buffer.writeStaticString(":")
                    buffer.writeString(String(entry.value))
                }
                buffer.writeStaticString("}")
            }
        case .error(let code, let message, let channel, let clientMessageID):
            buffer.writeStaticString("{\"type\":\"error\"")
            buffer.writeField("code", quoting: code.name)
            buffer.writeField("message", quoting: message)
            if let clientMessageID { buffer.writeField("client_msg_id", quoting: Self.excerpt(clientMessageID)) }
            if let channel { buffer.writeField("channel_id", quoting: Self.excerpt(channel)) }
        }
        buffer.writeStaticString("}")
    }

    /// At most ``maxEcho`` bytes of `text`, cut on a character boundary.
    static func excerpt(_ text: some StringProtocol) -> String {
        guard text.utf8.count > Self.maxEcho else { return String(text) }
        var result = ""
        for character in text {
            guard result.utf8.count + character.utf8.count <= Self.maxEcho else { break }
            result.append(character)
        }
        return result
    }
}

extension ByteBuffer {
    /// Appends `,"key":` and `text` as a JSON string: a field after the first of an object.
    fileprivate mutating func writeField(_ key: StaticString, quoting text: some StringProtocol) {
        self.writeFieldName(key)
        JSONText.writeQuoted(text, to: &self)
    }

    /// Appends `,"key":` and `value`.
    fileprivate mutating func writeField(_ key: StaticString, _ value: Int64) {
        self.writeFieldName(key)
        self.writeString(String(value))
    }

    private mutating func writeFieldName(_ key: StaticString) {
        self.writeStaticString(",\"")
        self.writeStaticString(key)
        self.writeStaticString("\":")
    }
}
