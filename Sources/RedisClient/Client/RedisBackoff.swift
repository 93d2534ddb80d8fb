/// Exponential reconnect delays with full jitter, reset after a connection succeeds.
struct RedisBackoff {
    let minimum: Duration
    let maximum: Duration
    private var attempt = 0

    init(minimum: Duration, maximum: Duration) {
        self.minimum = minimum
        self.maximum = maximum
    }

    /// The delay before the next attempt.
    mutating func next() -> Duration {
        let factor = 1 << min(self.attempt, 16)
        self.attempt += 1
        let ceiling = min(self.maximum, self.minimum * factor)
        let nanos = Self.nanoseconds(ceiling)
        // Half fixed, half random: spreads reconnects of many relays without ever retrying at once.
        return .nanoseconds(nanos / 2 + Int64.random(in: 0...max(nanos / 2, 1)))
    }

    mutating func reset() {
        self.attempt = 0
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
