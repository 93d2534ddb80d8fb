import NIOCore
import Synchronization

/// Writes per user per second (`--rate-limit`): a token bucket per user that holds one second's
/// worth and fills up again continuously. Each relay counts the writes it serves (REST
/// `POST`/`PATCH`/`DELETE` and WebSocket `send`/`read` frames alike), so behind a load balancer a
/// user may make up to that many through each relay.
///
/// A bucket is kept only while it is not full: the buckets of users who wrote nothing for a
/// second are dropped once there are many, so memory follows the users writing now.
final class RateLimiter: Sendable {
    /// Writes a user may make in one second, and in one burst.
    let perSecond: Int
    private let state = Mutex(State())

    /// Buckets kept before full ones are looked for and dropped (at most once a second).
    static let sweepAbove = 1024

    struct Bucket {
        var tokens: Double
        var stamp: UInt64
    }

    struct State {
        var buckets: [String: Bucket] = [:]
        var lastSweep: UInt64 = 0
    }

    init(perSecond: Int) {
        precondition(perSecond > 0, "a rate limit of \(perSecond)")
        self.perSecond = perSecond
    }

    /// Takes one of `user`'s writes at `now` (uptime nanoseconds).
    /// - Returns: nil if it may go ahead; otherwise the whole seconds to wait before the next
    ///   (at least 1), for `Retry-After`.
    func take(_ user: String, now: UInt64 = NIODeadline.now().uptimeNanoseconds) -> Int? {
        let rate = Double(self.perSecond)
        return self.state.withLock { state in
            if state.buckets.count > Self.sweepAbove, now &- state.lastSweep >= 1_000_000_000 {
                state.lastSweep = now
                state.buckets = state.buckets.filter { Self.level($0.value, now: now, rate: rate) < rate }
            }
            var bucket = state.buckets[user] ?? Bucket(tokens: rate, stamp: now)
            bucket.tokens = Self.level(bucket, now: now, rate: rate)
            bucket.stamp = now
            defer { state.buckets[user] = bucket }
            guard bucket.tokens >= 1 else {
                return max(1, Int(((1 - bucket.tokens) / rate).rounded(.up)))
            }
            bucket.tokens -= 1
            return nil
        }
    }

    /// Buckets held (for tests).
    var count: Int { self.state.withLock { $0.buckets.count } }

    /// The bucket's tokens at `now`: filled at `rate` a second since its stamp, up to `rate`.
    private static func level(_ bucket: Bucket, now: UInt64, rate: Double) -> Double {
        let elapsed = now > bucket.stamp ? Double(now - bucket.stamp) / 1e9 : 0
        return min(rate, bucket.tokens + elapsed * rate)
    }

    /// The error a refused write gets.
    func refusal(retryAfter seconds: Int) -> APIError {
        var error = APIError(.rateLimited, "more than \(self.perSecond) writes a second: retry in \(seconds) s")
        error.retryAfter = seconds
        return error
    }
}
