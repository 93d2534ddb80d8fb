import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

/// Keeps the presence key of every user connected to this relay alive: one round of
/// `SET user:{U}:presence … PX <two heartbeats>` per heartbeat for all of them, in writes of
/// ``batch``, rather than a timer and a round trip per connection. A user's key lapses within
/// two heartbeats after its last connection (on any relay) ends.
final class PresenceKeeper: Service, Sendable {
    private let redis: RedisClient
    private let heartbeat: Duration
    private let logger: Logger
    /// User → connections on this relay, and the command that refreshes the user's key, made
    /// and encoded once (at a 5 s heartbeat with 10,000 users, making it anew was 14 % of an
    /// idle relay's CPU, and hiredis's encoding of it each time about 3 %).
    private let connections = Mutex<[String: (count: Int, refresh: RedisEncodedCommand)]>([:])

    /// Commands per write when refreshing: Redis runs a write's commands one after the other,
    /// and a batch of 1,000 `SET`s held its other clients for about 1.5 ms (and took a 128 KiB
    /// buffer, the size at which glibc maps memory for each one).
    static let batch = 100

    init(redis: RedisClient, heartbeat: Duration, logger: Logger) {
        self.redis = redis
        self.heartbeat = heartbeat
        self.logger = logger
    }

    private var ttl: Duration { self.heartbeat * 2 }

    /// A connection of `user` opened: the user is online from now on.
    func connected(_ user: String) async {
        let refresh = self.connections.withLock { connections -> RedisEncodedCommand? in
            if connections[user] != nil {
                connections[user]!.count += 1
                return nil
            }
            let key = RelayKeys.User(user).presence
            let refresh = RedisEncodedCommand(RedisCommand("SET", key: key, [key, "1", "PX", self.ttl.wholeMilliseconds]))
            connections[user] = (1, refresh)
            return refresh
        }
        if let refresh {
            _ = try? await self.redis.execute(refresh.command)
        }
    }

    /// A connection of `user` ended; its key is no longer refreshed once the user's last one has.
    func disconnected(_ user: String) {
        self.connections.withLock { connections in
            guard let count = connections[user]?.count else { return }
            if count > 1 {
                connections[user]!.count = count - 1
            } else {
                connections[user] = nil
            }
        }
    }

    /// Refreshes every heartbeat until graceful shutdown or cancellation.
    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: self.heartbeat)
                guard !Task.isCancelled else { break }
                await self.refresh()
            }
        }
    }

    /// One round of `SET … PX` for every connected user, in writes of ``batch``, whose replies
    /// Redis does not send (`OK`, or an error no one would act on: the next round tries again).
    func refresh() async {
        let refreshes = self.connections.withLock { $0.values.map(\.refresh) }
        do {
            try await self.redis.executeWithoutReplies(refreshes, batch: Self.batch)
        } catch {
            self.logger.debug("presence refresh failed", metadata: ["error": "\(error)"])
        }
    }
}
