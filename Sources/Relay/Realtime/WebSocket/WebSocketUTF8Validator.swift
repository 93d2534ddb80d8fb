import NIOCore

/// An incremental UTF-8 validator (RFC 3629: no overlong forms, no surrogates, nothing above
/// U+10FFFF), fed a message's bytes as its fragments arrive, so that a code point split across
/// fragments is accepted and an invalid sequence is found in the fragment that holds it.
struct WebSocketUTF8Validator: Sendable {
    /// Continuation bytes still expected for the current code point.
    private var needed: UInt8 = 0
    /// The range the next continuation byte must fall in (narrower after E0, ED, F0, F4).
    private var lower: UInt8 = 0x80
    private var upper: UInt8 = 0xBF

    /// Whether the bytes fed so far end on a code point boundary: a complete text is valid when
    /// every ``feed(_:)`` returned true and this holds at the end.
    var isComplete: Bool { self.needed == 0 }

    /// Feeds the next bytes. Returns false as soon as they cannot be part of valid UTF-8; the
    /// validator must not be fed again after that.
    mutating func feed(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        let count = bytes.count
        while index < count {
            let byte = bytes[index]
            index += 1
            if self.needed == 0 {
                if byte < 0x80 { continue }
                switch byte {
                case 0xC2...0xDF:
                    self.needed = 1
                case 0xE0:
                    self.needed = 2
                    self.lower = 0xA0  // no overlong 3-byte forms
                case 0xE1...0xEC, 0xEE...0xEF:
                    self.needed = 2
                case 0xED:
                    self.needed = 2
                    self.upper = 0x9F  // no surrogates (U+D800...U+DFFF)
                case 0xF0:
                    self.needed = 3
                    self.lower = 0x90  // no overlong 4-byte forms
                case 0xF1...0xF3:
                    self.needed = 3
                case 0xF4:
                    self.needed = 3
                    self.upper = 0x8F  // nothing above U+10FFFF
                default:
                    return false  // a continuation byte out of place, C0, C1, F5...FF
                }
            } else {
                guard byte >= self.lower, byte <= self.upper else { return false }
                self.lower = 0x80
                self.upper = 0xBF
                self.needed -= 1
            }
        }
        return true
    }

    /// Feeds the readable bytes of `buffer`.
    mutating func feed(_ buffer: ByteBuffer) -> Bool {
        buffer.withUnsafeReadableBytes { self.feed($0) }
    }

    /// Feeds `bytes`.
    mutating func feed(_ bytes: some Collection<UInt8>) -> Bool {
        if let result = bytes.withContiguousStorageIfAvailable({ self.feed(UnsafeRawBufferPointer($0)) }) {
            return result
        }
        return Array(bytes).withUnsafeBytes { self.feed($0) }
    }
}
