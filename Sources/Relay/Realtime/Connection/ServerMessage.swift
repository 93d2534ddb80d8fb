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
        switch self {
        case .hello(let user, let session, let connection, let heartbeat):
            return "{\"type\":\"hello\",\"user_id\":\(JSONText.quoted(user)),\"session_id\":\(JSONText.quoted(session))"
                + ",\"connection_id\":\(JSONText.quoted(connection)),\"heartbeat_ms\":\(heartbeat)}"
        case .pong:
            return "{\"type\":\"pong\"}"
        case .ack(let clientMessageID, let channel, let seq, let messageID):
            return "{\"type\":\"ack\",\"client_msg_id\":\(JSONText.quoted(clientMessageID)),\"channel_id\":\(JSONText.quoted(channel))"
                + ",\"seq\":\(seq),\"message_id\":\(JSONText.quoted(messageID))}"
        case .readOK(let channel, let last):
            return "{\"type\":\"read_ok\",\"channel_id\":\(JSONText.quoted(channel)),\"last_read_seq\":\(last)}"
        case .resumed(let truncated):
            guard !truncated.isEmpty else { return "{\"type\":\"resumed\"}" }
            let entries = truncated.sorted { $0.key < $1.key }.map { "\(JSONText.quoted($0.key)):\($0.value)" }
            return "{\"type\":\"resumed\",\"truncated\":{" + entries.joined(separator: ",") + "}}"
        case .error(let code, let message, let channel, let clientMessageID):
            var json = "{\"type\":\"error\",\"code\":\"\(code.name)\",\"message\":\(JSONText.quoted(message))"
            if let clientMessageID { json += ",\"client_msg_id\":\(JSONText.quoted(Self.excerpt(clientMessageID)))" }
            if let channel { json += ",\"channel_id\":\(JSONText.quoted(Self.excerpt(channel)))" }
            return json + "}"
        }
    }

    /// The message as the payload of a text frame.
    var buffer: ByteBuffer { ByteBuffer(string: self.json) }

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
