import Histogram

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
