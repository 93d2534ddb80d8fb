import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

/// Keeps the presence key of every user connected to this relay alive: one pipelined batch of
/// `SET user:{U}:presence … PX <two heartbeats>` per heartbeat for all of them, rather than a
/// timer and a round trip per connection. A user's key lapses within two heartbeats after its
/// last connection (on any relay) ends.
final class PresenceKeeper: Service, Sendable {
    private let redis: RedisClient
    private let heartbeat: Duration
    private let logger: Logger
    /// User → connections on this relay.
    private let connections = Mutex<[String: Int]>([:])

    /// Commands per pipeline when refreshing.
    static let batch = 1000

    init(redis: RedisClient, heartbeat: Duration, logger: Logger) {
        self.redis = redis
        self.heartbeat = heartbeat
        self.logger = logger
    }

    private var ttl: Duration { self.heartbeat * 2 }

    /// A connection of `user` opened: the user is online from now on.
    func connected(_ user: String) async {
        let first = self.connections.withLock { connections in
            connections[user, default: 0] += 1
            return connections[user] == 1
        }
        if first {
            try? await self.redis.set(RelayKeys.User(user).presence, to: "1", expiresIn: self.ttl)
        }
    }

    /// A connection of `user` ended; its key is no longer refreshed once the user's last one has.
    func disconnected(_ user: String) {
        self.connections.withLock { connections in
            guard let count = connections[user] else { return }
            connections[user] = count > 1 ? count - 1 : nil
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

    /// One round of `SET … PX` for every connected user, in pipelines of ``batch``.
    func refresh() async {
        let users = self.connections.withLock { Array($0.keys) }
        var start = 0
        while start < users.count {
            let end = min(start + Self.batch, users.count)
            let commands = users[start..<end].map { user in
                let key = RelayKeys.User(user).presence
                return RedisCommand("SET", key: key, [key, "1", "PX", "\(self.ttl.wholeMilliseconds)"])
            }
            do {
                _ = try await self.redis.pipeline(commands)
            } catch {
                self.logger.debug("presence refresh failed", metadata: ["error": "\(error)"])
            }
            start = end
        }
    }
}
