import NIOCore

/// What an event does to membership, read from its JSON once (by the hub for a live event, by
/// the connection for a page of the log), so that a connection knows without parsing that its
/// user joined or left a channel at exactly this seq.
enum EventMembership: Sendable, Equatable {
    case joined(user: String)
    case left(user: String)

    /// The membership change an event's JSON describes, or `nil` for every other event.
    ///
    /// The relay's own scripts write the JSON (`{"channel_id":…,"seq":…,"type":"member_left",
    /// "user_id":"…",…}`: the type comes within the first few dozen bytes, and a member event
    /// carries no text) and ids never need escaping, so a bounded scan for the two fields suffices.
    static func of(json: ByteBuffer) -> EventMembership? {
        json.withUnsafeReadableBytes { Self.of(bytes: $0) }
    }

    static func of(json: String) -> EventMembership? {
        var json = json
        return json.withUTF8 { Self.of(bytes: UnsafeRawBufferPointer($0)) }
    }

    /// How far into an event its `type` may start: past the channel id (64 bytes at most) and the seq.
    private static let typeWindow = 160

    static func of(bytes: UnsafeRawBufferPointer) -> EventMembership? {
        guard let type = EventJSON.field(.type, in: bytes, within: Self.typeWindow) else { return nil }
        let joined: Bool
        if type.elementsEqual(Self.memberJoined) {
            joined = true
        } else if type.elementsEqual(Self.memberLeft) {
            joined = false
        } else {
            return nil
        }
        guard let user = EventJSON.field(.userID, in: bytes) else { return nil }
        let id = String(decoding: user, as: UTF8.self)
        return joined ? .joined(user: id) : .left(user: id)
    }

    private static let memberJoined = Array("member_joined".utf8)
    private static let memberLeft = Array("member_left".utf8)
}

/// A user's membership changes in one channel, as `ch:{C}:membership` keeps them: the seqs of
/// its `member_joined` (`j`) and `member_left` (`l`) events, oldest first (`j1 l9 j12`). Only the
/// newest are kept (`lua/prelude.lua`): the oldest go two at a time, and a leading `-` says so.
struct MembershipRecord: Sendable, Equatable {
    private var changes: [(joined: Bool, seq: Int64)]
    /// Whether older changes were dropped.
    private var trimmed = false

    /// nil for a record that is not one (no change, or one it cannot read).
    init?(_ text: String) {
        var entries = text.split(separator: " ")
        if entries.first == "-" {
            self.trimmed = true
            entries.removeFirst()
        }
        var changes: [(joined: Bool, seq: Int64)] = []
        for entry in entries {
            guard let kind = entry.first, kind == "j" || kind == "l", let seq = Int64(entry.dropFirst()) else { return nil }
            changes.append((kind == "j", seq))
        }
        guard !changes.isEmpty else { return nil }
        self.changes = changes
    }

    /// Whether a replay writes the events right after `seq`: false only while the user is out
    /// of the channel after one of its `member_left`s, before its next `member_joined`.
    ///
    /// Before the first change kept: in if that is a leave (a join from before records were
    /// kept); if it is a join, in before the user's first join ever (a resume promises every
    /// event after its cursor, and only what follows a `member_left` is withheld), and out before
    /// one whose older changes were dropped (the user may have just left).
    func isMember(after seq: Int64) -> Bool {
        guard let last = self.changes.last(where: { $0.seq <= seq }) else { return !self.trimmed || !self.changes[0].joined }
        return last.joined
    }

    /// The seq of the user's latest `member_joined` recorded, whether it left since or not.
    var latestJoin: Int64? {
        self.changes.last(where: \.joined)?.seq
    }

    /// The seq of the user's `member_joined` if the last change is one (the user is in).
    var currentJoin: Int64? {
        self.changes.last.flatMap { $0.joined ? $0.seq : nil }
    }

    static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.trimmed == rhs.trimmed && lhs.changes.elementsEqual(rhs.changes) { $0.joined == $1.joined && $0.seq == $1.seq }
    }
}
