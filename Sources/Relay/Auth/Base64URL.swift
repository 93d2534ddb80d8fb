/// Unpadded base64url (RFC 4648 §5), as JWS compact serialization uses it.
///
/// Decoding is strict: padding, characters outside the URL-safe alphabet, and encodings whose
/// unused trailing bits are not zero are all rejected, so every byte string has exactly one
/// accepted spelling. A lenient decoder would let a token be re-spelled without changing what
/// it decodes to, which breaks anything that compares or caches tokens as text.
enum Base64URL {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// Maps an ASCII byte to its 6-bit value, or to `invalid`.
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: invalid, count: 256)
        for (value, character) in alphabet.enumerated() {
            table[Int(character)] = UInt8(value)
        }
        return table
    }()

    private static let invalid: UInt8 = 0xFF

    /// Encodes `bytes` without padding.
    static func encode(_ bytes: some Collection<UInt8>) -> String {
        var output: [UInt8] = []
        output.reserveCapacity((bytes.count * 4 + 2) / 3)
        var iterator = bytes.makeIterator()
        while let first = iterator.next() {
            let second = iterator.next()
            let third = iterator.next()
            let group = UInt32(first) << 16 | UInt32(second ?? 0) << 8 | UInt32(third ?? 0)
            output.append(alphabet[Int(group >> 18 & 0x3F)])
            output.append(alphabet[Int(group >> 12 & 0x3F)])
            if second != nil { output.append(alphabet[Int(group >> 6 & 0x3F)]) }
            if third != nil { output.append(alphabet[Int(group & 0x3F)]) }
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// Decodes unpadded base64url text.
    ///
    /// - Returns: the bytes, or `nil` if `text` is not the canonical unpadded encoding of any
    ///   byte string (padding, a foreign character, a length of 4n+1, or non-zero trailing bits).
    static func decode(_ text: some Collection<UInt8>) -> [UInt8]? {
        let remainder = text.count % 4
        if remainder == 1 { return nil }
        var output: [UInt8] = []
        output.reserveCapacity(text.count / 4 * 3 + max(remainder - 1, 0))
        var group: UInt32 = 0
        var filled = 0
        for character in text {
            let value = values[Int(character)]
            if value == invalid { return nil }
            group = group << 6 | UInt32(value)
            filled += 1
            if filled == 4 {
                output.append(UInt8(truncatingIfNeeded: group >> 16))
                output.append(UInt8(truncatingIfNeeded: group >> 8))
                output.append(UInt8(truncatingIfNeeded: group))
                group = 0
                filled = 0
            }
        }
        switch filled {
        case 0:
            break
        case 2:
            // 12 bits carry one byte; the low 4 must be zero.
            if group & 0x0F != 0 { return nil }
            output.append(UInt8(truncatingIfNeeded: group >> 4))
        case 3:
            // 18 bits carry two bytes; the low 2 must be zero.
            if group & 0x03 != 0 { return nil }
            output.append(UInt8(truncatingIfNeeded: group >> 10))
            output.append(UInt8(truncatingIfNeeded: group >> 2))
        default:
            preconditionFailure("a length of 4n+1 was rejected above")
        }
        return output
    }
}
