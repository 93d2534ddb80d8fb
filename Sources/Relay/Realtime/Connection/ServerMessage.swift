import NIOCore

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

    /// Appends the message's JSON to `buffer`.
    func writeJSON(to buffer: inout ByteBuffer) {
        switch self {
        case .hello(let user, let session, let connection, let heartbeat):
            buffer.writeStaticString("{\"type\":\"hello\",\"user_id\":")
            JSONText.writeQuoted(user, to: &buffer)
            buffer.writeStaticString(",\"session_id\":")
            JSONText.writeQuoted(session, to: &buffer)
            buffer.writeStaticString(",\"connection_id\":")
            JSONText.writeQuoted(connection, to: &buffer)
            buffer.writeStaticString(",\"heartbeat_ms\":")
            buffer.writeString(String(heartbeat))
            buffer.writeStaticString("}")
        case .pong:
            buffer.writeStaticString("{\"type\":\"pong\"}")
        case .ack(let clientMessageID, let channel, let seq, let messageID):
            buffer.writeStaticString("{\"type\":\"ack\",\"client_msg_id\":")
            JSONText.writeQuoted(clientMessageID, to: &buffer)
            buffer.writeStaticString(",\"channel_id\":")
            JSONText.writeQuoted(channel, to: &buffer)
            buffer.writeStaticString(",\"seq\":")
            buffer.writeString(String(seq))
            buffer.writeStaticString(",\"message_id\":")
            JSONText.writeQuoted(messageID, to: &buffer)
            buffer.writeStaticString("}")
        case .readOK(let channel, let last):
            buffer.writeStaticString("{\"type\":\"read_ok\",\"channel_id\":")
            JSONText.writeQuoted(channel, to: &buffer)
            buffer.writeStaticString(",\"last_read_seq\":")
            buffer.writeString(String(last))
            buffer.writeStaticString("}")
        case .resumed(let truncated):
            guard !truncated.isEmpty else {
                buffer.writeStaticString("{\"type\":\"resumed\"}")
                return
            }
            buffer.writeStaticString("{\"type\":\"resumed\",\"truncated\":{")
            for (index, entry) in truncated.sorted(by: { $0.key < $1.key }).enumerated() {
                if index > 0 { buffer.writeStaticString(",") }
                JSONText.writeQuoted(entry.key, to: &buffer)
                buffer.writeStaticString(":")
                buffer.writeString(String(entry.value))
            }
            buffer.writeStaticString("}}")
        case .error(let code, let message, let channel, let clientMessageID):
            buffer.writeStaticString("{\"type\":\"error\",\"code\":\"")
            buffer.writeString(code.name)
            buffer.writeStaticString("\",\"message\":")
            JSONText.writeQuoted(message, to: &buffer)
            if let clientMessageID {
                buffer.writeStaticString(",\"client_msg_id\":")
                JSONText.writeQuoted(Self.excerpt(clientMessageID), to: &buffer)
            }
            if let channel {
                buffer.writeStaticString(",\"channel_id\":")
                JSONText.writeQuoted(Self.excerpt(channel), to: &buffer)
            }
            buffer.writeStaticString("}")
        }
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
