import NIOCore

/// The text of every message the load generator publishes: `"<stream> <number> <sent ns>"`.
/// A stream is one publisher's sequence (numbered 1, 2, 3, …), so a receiver can check that it
/// got each message once and in order, on the relay and on the peer alike; the send time (this
/// process's monotonic clock) gives the publish-to-receive latency.
enum BenchPayload {
    struct Fields {
        var stream: Int
        var number: Int
        var sentAt: UInt64
    }

    static func text(stream: Int, number: Int, sentAt: UInt64) -> String {
        "\(stream) \(number) \(sentAt)"
    }

    private static let textKey = Array("\"text\":\"".utf8)

    /// The fields of a delivered frame: the relay's event JSON (`inJSON`: the payload is the
    /// event's `text`), or the bare payload (nchan). Nil for anything else (hello, acks, joins).
    static func parse(_ buffer: ByteBuffer, inJSON: Bool) -> Fields? {
        buffer.withUnsafeReadableBytes { bytes -> Fields? in
            var index = 0
            if inJSON {
                guard let start = Self.find(Self.textKey, in: bytes) else { return nil }
                index = start + Self.textKey.count
            }
            guard let stream = Self.number(bytes, &index), let number = Self.number(bytes, &index),
                let sentAt = Self.number(bytes, &index)
            else { return nil }
            return Fields(stream: Int(stream), number: Int(number), sentAt: sentAt)
        }
    }

    /// Reads decimal digits at `index`, then skips one separator.
    @inline(__always)
    private static func number(_ bytes: UnsafeRawBufferPointer, _ index: inout Int) -> UInt64? {
        var value: UInt64 = 0
        let start = index
        while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 {
            value = value &* 10 &+ UInt64(bytes[index] - 48)
            index += 1
        }
        guard index > start else { return nil }
        index += 1
        return value
    }

    private static func find(_ needle: [UInt8], in bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count >= needle.count else { return nil }
        let first = needle[0]
        var index = 0
        while index <= bytes.count - needle.count {
            if bytes[index] == first {
                var matched = 1
                while matched < needle.count, bytes[index + matched] == needle[matched] { matched += 1 }
                if matched == needle.count { return index }
            }
            index += 1
        }
        return nil
    }
}
