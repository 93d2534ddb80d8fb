/// The two kinds of channel.
public enum ChannelType: String, Sendable, Encodable {
    case dm, group

    /// Whether `id` names a DM: DM ids are `dm-` and a hash of the pair, and a group's id may
    /// not start with `dm-`.
    public static func isDirectMessage(_ id: some StringProtocol) -> Bool {
        id.hasPrefix("dm-")
    }
}

/// A channel as `GET /channels/{id}` shows it to a member.
struct ChatChannel: Sendable, Encodable {
    /// Above this many members the channel object leaves `members` out (page them instead).
    static let maxListedMembers = 1000

    var id: String
    var type: ChannelType
    var name: String?
    /// Sorted; `nil` when there are more than ``maxListedMembers``.
    var members: [String]?
    var memberCount: Int
    /// The lowest seq the log still holds (1 until retention trims it; `lastSeq + 1` when empty).
    var firstSeq: Int64
    var lastSeq: Int64
    var createdAt: Int64
    var creator: String

    enum CodingKeys: String, CodingKey {
        case id, type, name, members, creator
        case memberCount = "member_count"
        case firstSeq = "first_seq"
        case lastSeq = "last_seq"
        case createdAt = "created_at"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(self.id, forKey: .id)
        try container.encode(self.type, forKey: .type)
        try container.encode(self.name, forKey: .name)  // null when unnamed
        try container.encodeIfPresent(self.members, forKey: .members)
        try container.encode(self.memberCount, forKey: .memberCount)
        try container.encode(self.firstSeq, forKey: .firstSeq)
        try container.encode(self.lastSeq, forKey: .lastSeq)
        try container.encode(self.createdAt, forKey: .createdAt)
        try container.encode(self.creator, forKey: .creator)
    }
}

/// One of the caller's channels in `GET /channels`, with the caller's session's read state.
struct ChannelSummary: Sendable, Encodable {
    var id: String
    var type: ChannelType
    var name: String?
    var memberCount: Int
    var lastSeq: Int64
    var lastReadSeq: Int64
    var unread: Int64 { self.lastSeq - self.lastReadSeq }

    enum CodingKeys: String, CodingKey {
        case id, type, name, unread
        case memberCount = "member_count"
        case lastSeq = "last_seq"
        case lastReadSeq = "last_read_seq"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(self.id, forKey: .id)
        try container.encode(self.type, forKey: .type)
        try container.encode(self.name, forKey: .name)
        try container.encode(self.memberCount, forKey: .memberCount)
        try container.encode(self.lastSeq, forKey: .lastSeq)
        try container.encode(self.lastReadSeq, forKey: .lastReadSeq)
        try container.encode(self.unread, forKey: .unread)
    }
}

/// One page of a channel's members (`GET /channels/{id}/members`).
struct MembersPage: Sendable, Encodable {
    var members: [String]
    /// Where the next page starts; `nil` after the last.
    var nextCursor: String?

    enum CodingKeys: String, CodingKey {
        case members
        case nextCursor = "next_cursor"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(self.members, forKey: .members)
        try container.encode(self.nextCursor, forKey: .nextCursor)
    }
}

/// A page of a channel's log, events as the log holds them (JSON text).
struct HistoryPage: Sendable {
    var events: [String]
    /// Whether more events lie beyond the page (never below ``firstSeq``).
    var hasMore: Bool
    /// The lowest seq the log still holds.
    var firstSeq: Int64
}

/// How long a channel's log keeps its events. Zero means no limit.
public struct RelayRetention: Sendable, Hashable {
    /// At most this many events per channel, the newest (0: no cap).
    public var maxEvents: Int = 0
    /// Events older than this many days are trimmed as new ones are appended (0: kept).
    public var maxAgeDays: Int = 0

    public init(maxEvents: Int = 0, maxAgeDays: Int = 0) {
        self.maxEvents = maxEvents
        self.maxAgeDays = maxAgeDays
    }

    /// The longest value of each setting (about 100 years; a billion events).
    public static let maxEventsRange = 0...1_000_000_000
    public static let maxAgeDaysRange = 0...36_500
}
