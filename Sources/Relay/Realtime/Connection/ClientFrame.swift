import NIOCore

/// A client's frame (contract section 5), checked: each case carries what serving it needs.
enum ClientFrame: Equatable, Sendable {
    case ping
    /// `invalid`: the answers to entries that are not a channel id and a seq, each naming its
    /// channel; the others are served all the same.
    case resume(cursors: [(channel: String, cursor: Int64)], invalid: [ServerMessage] = [])
    case send(channel: String, clientMessageID: String, text: String)
    case read(channel: String, seq: Int64)

    static func == (lhs: ClientFrame, rhs: ClientFrame) -> Bool {
        switch (lhs, rhs) {
        case (.ping, .ping): return true
        case (.resume(let a, let aInvalid), .resume(let b, let bInvalid)):
            return a.map(\.channel) == b.map(\.channel) && a.map(\.cursor) == b.map(\.cursor) && aInvalid == bInvalid
        case (.send(let a1, let a2, let a3), .send(let b1, let b2, let b3)): return a1 == b1 && a2 == b2 && a3 == b3
        case (.read(let a1, let a2), .read(let b1, let b2)): return a1 == b1 && a2 == b2
        default: return false
        }
    }

    /// A parsed frame, or the error to answer it with.
    enum Parsed: Equatable {
        case frame(ClientFrame)
        case rejected(ServerMessage)
    }

    /// Parses a text frame's JSON.
    ///
    /// - Returns: the frame, or the error to answer (`bad_request`, `too_large`), which quotes
    ///   nothing of the frame but a bounded excerpt.
    static func parse(_ payload: ByteBuffer, limits: RelayLimits) -> Parsed {
        guard let object = StrictJSON.parse(payload.readableBytesView), let type = object["type"]?.string else {
            return .rejected(.error(code: .badRequest, message: "frames are JSON objects with a type and typed fields"))
        }
        switch type {
        case "ping":
            return .frame(.ping)
        case "resume":
            guard case .object(let cursors)? = object["cursors"] else {
                return .rejected(.error(code: .badRequest, message: "resume needs cursors: {channel_id: seq}"))
            }
            // As for a channel the user is not in, a bad entry is answered on its own and the
            // others go on: a client waits for `resumed`, and gets it.
            var checked: [(channel: String, cursor: Int64)] = []
            var invalid: [ServerMessage] = []
            for (key, value) in cursors.sorted(by: { $0.key.text < $1.key.text }) {
                let channel = key.text
                if !Identifier.isValid(channel) {
                    invalid.append(.error(code: .badRequest, message: "cursors: not a channel id", channel: channel))
                } else if let cursor = value.int64, cursor >= 0 {
                    checked.append((channel, cursor))
                } else {
                    invalid.append(.error(code: .badRequest, message: "cursors: a seq is a whole number, 0 or more", channel: channel))
                }
            }
            return .frame(.resume(cursors: checked, invalid: invalid))
        case "send":
            guard let channel = object["channel_id"]?.string, let clientMessageID = object["client_msg_id"]?.string,
                let text = object["text"]?.string
            else {
                // Named as REST names them; the error carries what the frame gave of the send's ids.
                let field = ["channel_id", "client_msg_id", "text"].first { object[$0]?.string == nil } ?? "text"
                return .rejected(
                    .error(
                        code: .badRequest,
                        message: object[field] == nil ? "missing field \(field)" : "wrong type for \(field): a string",
                        channel: object["channel_id"]?.string.flatMap { Identifier.isValid($0) ? $0 : nil },
                        clientMessageID: object["client_msg_id"]?.string
                    )
                )
            }
            guard Identifier.isValid(channel) else {
                return .rejected(.error(code: .badRequest, message: "channel_id: \(Identifier.rule)", clientMessageID: clientMessageID))
            }
            guard !clientMessageID.isEmpty, clientMessageID.utf8.count <= limits.maxClientMessageIDBytes else {
                return .rejected(
                    .error(
                        code: .badRequest,
                        message: "client_msg_id must be 1 to \(limits.maxClientMessageIDBytes) bytes",
                        channel: channel,
                        clientMessageID: clientMessageID
                    )
                )
            }
            guard !text.isEmpty else {
                return .rejected(
                    .error(code: .badRequest, message: "text must not be empty", channel: channel, clientMessageID: clientMessageID)
                )
            }
            guard text.utf8.count <= limits.maxTextBytes else {
                return .rejected(
                    .error(
                        code: .tooLarge,
                        message: "text is over \(limits.maxTextBytes) bytes",
                        channel: channel,
                        clientMessageID: clientMessageID
                    )
                )
            }
            return .frame(.send(channel: channel, clientMessageID: clientMessageID, text: text))
        case "read":
            guard let channel = object["channel_id"]?.string, Identifier.isValid(channel), let seq = object["seq"]?.int64, seq >= 0 else {
                let message =
                    switch (object["channel_id"], object["seq"]) {
                    case (nil, _): "missing field channel_id"
                    case (.some(let given), _) where given.string.map(Identifier.isValid) != true: "channel_id: \(Identifier.rule)"
                    case (_, nil): "missing field seq"
                    default: "seq must be a whole number, 0 or more"
                    }
                return .rejected(.error(code: .badRequest, message: message, channel: object["channel_id"]?.string))
            }
            return .frame(.read(channel: channel, seq: seq))
        default:
            return .rejected(.error(code: .badRequest, message: "unknown frame type: \(ServerMessage.excerpt(type))"))
        }
    }
}
