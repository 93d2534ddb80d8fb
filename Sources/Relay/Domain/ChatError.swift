import RedisClient

/// An error of the chat domain: what a caller did wrong, or why the chat cannot do it now, in
/// terms a client can act on. The store throws it; the HTTP layer (``APIError``) and the
/// WebSocket layer map it to a status or an error frame, each in one place.
///
/// A failure to reach Redis stays a `RedisError` (the API's `unavailable`).
public struct ChatError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of error this is. New codes may be added.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        /// The API's name for it (`bad_request`, `not_found`, …).
        public let name: String
        private init(_ name: String) { self.name = name }

        /// The request itself is wrong (a bad argument, a rule of the channel type).
        public static let badRequest = Code("bad_request")
        /// No such channel, message or member; also a DM the caller is not in.
        public static let notFound = Code("not_found")
        /// Not a member of a group, not the sender, not allowed.
        public static let forbidden = Code("forbidden")
        /// An id taken, a message already deleted.
        public static let conflict = Code("conflict")
        /// Over a size limit.
        public static let tooLarge = Code("too_large")

        public var description: String { self.name }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(self.code): \(self.message)" }

    static func badRequest(_ message: String) -> ChatError { ChatError(.badRequest, message) }

    /// The answer for a channel that does not exist.
    public static let noSuchChannel = ChatError(.notFound, "no such channel")

    /// The answer when the caller is not a member of `channel`: `forbidden` for a group; for a
    /// DM exactly what a channel that does not exist gets (``noSuchChannel``), so that nobody
    /// can probe who talks to whom (DM ids are a public hash of the pair).
    public static func notMember(channel: some StringProtocol) -> ChatError {
        ChannelType.isDirectMessage(channel) ? .noSuchChannel : ChatError(.forbidden, "not a member of this channel")
    }

    /// The domain meaning of a script's error reply (`-NOTMEMBER …`, see lua/README.md), or
    /// `nil` for a reply that is not one of the scripts' own codes.
    init?(script error: RedisError, channel: String) {
        guard let code = error.replyCode else { return nil }
        let detail = String(error.replyDetail)
        switch code {
        case "NOTFOUND": self.init(.notFound, detail)
        case "NOTMEMBER": self = .notMember(channel: channel)
        case "FORBIDDEN": self.init(.forbidden, detail)
        case "CONFLICT": self.init(.conflict, detail)
        case "BADREQUEST", "BADSEQ", "TOOMANY": self.init(.badRequest, detail)
        default: return nil
        }
    }
}
