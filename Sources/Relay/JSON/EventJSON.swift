import NIOCore

/// Fields of an event's JSON, read from its bytes without parsing it. The relay's own scripts
/// write every event (`{"channel_id":"…","seq":…,"type":"…",…}`, no spaces), ids never need
/// escaping, and the fields read here come before any text; inside a text a quote is escaped,
/// so `"name":` cannot be matched there.
enum EventJSON {
    /// A field's name as it appears before its value: `"name":`.
    struct Key: Sendable {
        let bytes: [UInt8]

        init(_ name: String) {
            self.bytes = Array("\"\(name)\":".utf8)
        }

        static let seq = Key("seq")
        static let type = Key("type")
        static let messageID = Key("message_id")
        static let userID = Key("user_id")
        static let createdAt = Key("created_at")
    }

    /// The value of the first `key` that starts within `window` bytes: a string without its
    /// quotes, a number as written; nil if there is none.
    static func field(
        _ key: Key,
        in bytes: UnsafeRawBufferPointer,
        within window: Int = .max
    ) -> Slice<UnsafeRawBufferPointer>? {
        let needle = key.bytes
        let last = min(window, bytes.count - needle.count)
        guard last >= 0 else { return nil }
        var start = 0
        while start <= last {
            if bytes[start] == needle[0], bytes[start..<start + needle.count].elementsEqual(needle) {
                var valueStart = start + needle.count
                let quoted = valueStart < bytes.count && bytes[valueStart] == UInt8(ascii: "\"")
                if quoted { valueStart += 1 }
                let rest = bytes[valueStart...]
                let end =
                    quoted
                    ? rest.firstIndex(of: UInt8(ascii: "\""))
                    : rest.firstIndex { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "}") } ?? bytes.count
                guard let end else { return nil }
                return bytes[valueStart..<end]
            }
            start += 1
        }
        return nil
    }

    /// ``field(_:in:within:)`` of an event held as a `String`, as a `String`.
    static func field(_ key: Key, in json: String) -> String? {
        var json = json
        return json.withUTF8 { utf8 in
            Self.field(key, in: UnsafeRawBufferPointer(utf8)).map { String(decoding: $0, as: UTF8.self) }
        }
    }
}
