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
