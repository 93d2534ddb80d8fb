/// An error from the Redis client: an error reply from the server, or a failure of the client.
///
/// ``isRetriable`` tells whether the command may simply be sent again: a command that failed
/// because its connection was lost or never came up may or may not have run on the server.
public struct RedisError: Error, Sendable, Hashable {
    /// What kind of failure this is. New codes may be added.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case serverError, connectionClosed, unavailable, timeout, protocolViolation, invalidConfiguration, shutdown
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// Redis answered with an error reply; ``RedisError/message`` holds it.
        public static let serverError = Code(.serverError)
        /// The connection closed while the command was in flight.
        public static let connectionClosed = Code(.connectionClosed)
        /// No connection to Redis could be had.
        public static let unavailable = Code(.unavailable)
        /// No reply came within the command's timeout.
        public static let timeout = Code(.timeout)
        /// The server sent something that is not RESP2, or a reply that makes no sense here.
        public static let protocolViolation = Code(.protocolViolation)
        /// The URL or another setting is unusable.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// The client is shutting down.
        public static let shutdown = Code(.shutdown)

        public var description: String { self.base.rawValue }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// Whether the failure is of the transport rather than of the command.
    public var isRetriable: Bool {
        self.code == .connectionClosed || self.code == .unavailable || self.code == .timeout
    }

    /// The first word of an error reply (`ERR`, `NOSCRIPT`, `WRONGTYPE`, or a script's own code).
    public var replyCode: Substring? {
        guard self.code == .serverError else { return nil }
        return self.message.prefix { $0 != " " }
    }

    /// An error reply's text after its first word.
    public var replyDetail: Substring {
        guard let space = self.message.firstIndex(of: " ") else { return "" }
        return self.message[self.message.index(after: space)...]
    }
}

extension RedisError: CustomStringConvertible {
    public var description: String { "\(self.code): \(self.message)" }
}
