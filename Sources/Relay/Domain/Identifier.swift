import COpenSSL
import Foundation
import Synchronization

/// Ids of users, sessions and channels: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, other than
/// `.` and `..`.
///
/// The charset keeps ids safe in Redis key names, in hash tags (no braces) and in JSON without
/// escaping, which the event encoding relies on.
enum Identifier {
    static let maxLength = 64

    /// The rule in words, for error messages.
    static let rule = "ids are 1 to 64 characters of A-Z a-z 0-9 . _ -, other than . and .."

    static func isValid(_ text: some StringProtocol) -> Bool {
        let utf8 = text.utf8
        guard !utf8.isEmpty, utf8.count <= Self.maxLength, utf8.allSatisfy(Self.isAllowed) else { return false }
        // `.` and `..` are a URL's dot segments: clients resolve them away, so no path could name them.
        return !utf8.allSatisfy { $0 == UInt8(ascii: ".") } || utf8.count > 2
    }

    @inline(__always)
    static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
            true
        default:
            false
        }
    }

    /// A new random id, `prefix` then 20 characters of Crockford base32, time-ordered: the
    /// first 10 encode the millisecond clock, so ids sort by creation time.
    static func make(prefix: String, now: UInt64 = Clock.milliseconds()) -> String {
        let bits = Self.random.withLock { $0.next() }
        let prefix = prefix.utf8
        // Written byte by byte into the string's own storage (one per message sent: no
        // `Character`s, no intermediate array).
        return String(unsafeUninitializedCapacity: prefix.count + 20) { buffer in
            var offset = 0
            for byte in prefix {
                buffer[offset] = byte
                offset += 1
            }
            var time = now
            for index in stride(from: offset + 9, through: offset, by: -1) {
                buffer[index] = Self.alphabet[Int(time & 31)]
                time >>= 5
            }
            offset += 10
            for index in 0..<10 {
                buffer[offset + index] = Self.alphabet[Int((bits >> (UInt64(index) * 5)) & 31)]
            }
            return offset + 10
        }
    }

    private static let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)

    /// The random part of ids: one id per message sent, and the system's generator asks the
    /// kernel (`getrandom`) on every call, a syscall per message.
    private static let random = Mutex(RandomWords())

    /// Random 64-bit words from OpenSSL's CSPRNG, drawn 256 at a time.
    private struct RandomWords {
        private var words = [UInt64](repeating: 0, count: 256)
        private var used = 256

        mutating func next() -> UInt64 {
            if self.used == self.words.count {
                let drawn = self.words.withUnsafeMutableBytes { RAND_bytes($0.baseAddress, Int32($0.count)) }
                precondition(drawn == 1, "RAND_bytes failed: no secure randomness available")
                self.used = 0
            }
            defer { self.used += 1 }
            return self.words[self.used]
        }
    }
}

/// Wall-clock milliseconds since the epoch.
enum Clock {
    static func milliseconds() -> UInt64 {
        UInt64(Date().timeIntervalSince1970 * 1000)
    }

    static func seconds() -> Int64 {
        Int64(Self.milliseconds() / 1000)
    }
}

extension Duration {
    /// The duration in whole milliseconds (truncated).
    var wholeMilliseconds: Int64 {
        self.components.seconds * 1000 + self.components.attoseconds / 1_000_000_000_000_000
    }
}

/// The id rule, for the command line's own checks.
public enum RelayIdentifier {
    /// Whether `text` is 1 to 64 characters of `A-Z a-z 0-9 . _ -`, other than `.` and `..`.
    public static func isValid(_ text: String) -> Bool { Identifier.isValid(text) }
}
