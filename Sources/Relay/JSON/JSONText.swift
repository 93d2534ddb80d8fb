import NIOCore

/// Builds JSON text by hand where the relay splices fragments (events are assembled in Lua
/// around a fragment the relay escapes), and parses nothing.
enum JSONText {
    /// `text` as a JSON string literal, quotes included. Escapes what RFC 8259 requires, and
    /// also U+2028/U+2029 so the result is safe inside JavaScript too.
    static func quoted(_ text: some StringProtocol) -> String {
        if !Self.needsEscaping(text.utf8) {
            var out = "\""
            out.reserveCapacity(text.utf8.count + 2)
            out += text
            out += "\""
            return out
        }
        var out = [UInt8]()
        out.reserveCapacity(text.utf8.count + 2)
        out.append(UInt8(ascii: "\""))
        let utf8 = Array(text.utf8)
        var index = 0
        while index < utf8.count {
            let byte = utf8[index]
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [92, 34])
            case UInt8(ascii: "\\"): out.append(contentsOf: [92, 92])
            case 0x0A: out.append(contentsOf: [92, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [92, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [92, UInt8(ascii: "t")])
            case 0x00..<0x20:
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(Self.hex[Int(byte >> 4)])
                out.append(Self.hex[Int(byte & 0xF)])
            case 0xE2 where index + 2 < utf8.count && utf8[index + 1] == 0x80 && (utf8[index + 2] == 0xA8 || utf8[index + 2] == 0xA9):
                out.append(contentsOf: Array((utf8[index + 2] == 0xA8 ? "\\u2028" : "\\u2029").utf8))
                index += 2
            default: out.append(byte)
            }
            index += 1
        }
        out.append(UInt8(ascii: "\""))
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends `text` as a JSON string literal (``quoted(_:)``) to `buffer`.
    static func writeQuoted(_ text: some StringProtocol, to buffer: inout ByteBuffer) {
        guard !Self.needsEscaping(text.utf8) else {
            buffer.writeString(Self.quoted(text))
            return
        }
        buffer.writeInteger(UInt8(ascii: "\""))
        buffer.writeBytes(text.utf8)
        buffer.writeInteger(UInt8(ascii: "\""))
    }

    /// Whether any byte of `utf8` is escaped by ``quoted(_:)``: a quote, a backslash, a control
    /// character, or the first byte of U+2028/U+2029 (checked there).
    private static func needsEscaping(_ utf8: some Collection<UInt8>) -> Bool {
        utf8.contains { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 == 0xE2 }
    }

    private static let hex = Array("0123456789abcdef".utf8)
}
