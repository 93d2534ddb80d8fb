import Histogram
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

/// What one socket received of each stream: which numbers (a bitset), in what order.
/// Touched only on the socket's event loop.
final class DeliveryLedger {
    struct Stream {
        var seen: [UInt64] = []
        var last = 0
        var distinct = 0
        var duplicates = 0
        var outOfOrder = 0

        mutating func record(_ number: Int) {
            let word = number >> 6
            if word >= self.seen.count { self.seen.append(contentsOf: repeatElement(0, count: word - self.seen.count + 1)) }
            let bit = UInt64(1) << UInt64(number & 63)
            if self.seen[word] & bit != 0 {
                self.duplicates += 1
                return
            }
            self.seen[word] |= bit
            self.distinct += 1
            if number < self.last { self.outOfOrder += 1 } else { self.last = number }
        }

        /// Numbers in 1...published never received.
        func missing(published: Int) -> Int {
            var have = 0
            for number in 1...max(published, 1) where number >> 6 < self.seen.count {
                if self.seen[number >> 6] & (UInt64(1) << UInt64(number & 63)) != 0 { have += 1 }
            }
            return max(published, 0) - have
        }
    }

    var streams: [Int: Stream] = [:]

    @inline(__always)
    func record(stream: Int, number: Int) {
        self.streams[stream, default: Stream()].record(number)
    }
}

/// Latencies and counts of the sockets on one event loop (one per loop, so no locks).
final class LoopMeter: @unchecked Sendable {
    var latency = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    var deliveries = 0
    var lastDeliveryAt: UInt64 = 0

    /// Records one delivery that arrived at `now` (µs of latency).
    @inline(__always)
    func record(sentAt: UInt64, now: UInt64) {
        self.deliveries += 1
        self.lastDeliveryAt = now
        _ = self.latency.record(now > sentAt ? (now - sentAt) / 1000 : 0)
    }
}

/// Correctness counts over all sockets.
struct DeliveryCheck: Sendable {
    var missing = 0
    var duplicates = 0
    var outOfOrder = 0
    var closedSockets = 0

    var isClean: Bool { self.missing == 0 && self.duplicates == 0 && self.outOfOrder == 0 && self.closedSockets == 0 }
}

/// Latency percentiles in milliseconds, from one or more loop meters.
struct LatencySummary: Sendable {
    var count: UInt64 = 0
    var p50 = 0.0
    var p90 = 0.0
    var p99 = 0.0
    var max = 0.0

    init(_ histograms: [Histogram<UInt64>]) {
        guard var merged = histograms.first else { return }
        for other in histograms.dropFirst() { merged.add(other) }
        self.count = merged.totalCount
        guard merged.totalCount > 0 else { return }
        self.p50 = Double(merged.valueAtPercentile(50)) / 1000
        self.p90 = Double(merged.valueAtPercentile(90)) / 1000
        self.p99 = Double(merged.valueAtPercentile(99)) / 1000
        self.max = Double(merged.max) / 1000
    }
}
