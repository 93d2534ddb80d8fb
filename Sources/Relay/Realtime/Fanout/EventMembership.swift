/// What an event does to membership, read from its JSON once (by the hub for a live event, by
/// the connection for a page of the log), so that a connection knows without parsing that its
/// user joined or left a channel at exactly this seq.
enum EventMembership: Sendable, Equatable {
    case joined(user: String)
    case left(user: String)

    /// The membership change an event's JSON describes, or `nil` for every other event.
    ///
    /// The relay's own scripts write the JSON (`{"channel_id":…,"seq":…,"type":"member_left",
    /// "user_id":"…",…}`) and ids never need escaping, so a scan for the two fields suffices.
    static func of(json bytes: some Collection<UInt8>) -> EventMembership? {
        let bytes = Array(bytes)
        guard let type = Self.stringField(Self.typeKey, in: bytes) else { return nil }
        let joined: Bool
        if type.elementsEqual(Self.memberJoined) {
            joined = true
        } else if type.elementsEqual(Self.memberLeft) {
            joined = false
        } else {
            return nil
        }
        guard let user = Self.stringField(Self.userKey, in: bytes) else { return nil }
        let id = String(decoding: user, as: UTF8.self)
        return joined ? .joined(user: id) : .left(user: id)
    }

    private static let typeKey = Array("\"type\":\"".utf8)
    private static let userKey = Array("\"user_id\":\"".utf8)
    private static let memberJoined = Array("member_joined".utf8)
    private static let memberLeft = Array("member_left".utf8)

    /// The value of the first `"key":"value"` at the object's top level (the relay's events nest
    /// nothing before these fields), without its quotes.
    private static func stringField(_ key: [UInt8], in bytes: [UInt8]) -> ArraySlice<UInt8>? {
        guard bytes.count >= key.count else { return nil }
        var start = 0
        while start + key.count <= bytes.count {
            if bytes[start] == key[0], bytes[start..<start + key.count].elementsEqual(key) {
                let valueStart = start + key.count
                guard let end = bytes[valueStart...].firstIndex(of: UInt8(ascii: "\"")) else { return nil }
                return bytes[valueStart..<end]
            }
            start += 1
        }
        return nil
    }
}
