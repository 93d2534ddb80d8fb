import NIOCore
import RedisClient

/// Tells every relay that some users' channel sets changed, so that their live connections
/// start following a channel they joined. Best effort: a connection also reads its channel set
/// again whenever its user's topic was resubscribed, and a resume asks Redis.
///
/// Leaving needs no notice: a connection stops following a channel right after delivering its
/// user's own `member_left`.
struct RealtimeNotifier: Sendable {
    let redis: RedisClient

    /// `users` were added or removed somewhere: their connections read their channels again.
    func channelsChanged(for users: [String]) async {
        let commands = Set(users).map { user in
            let topic = RelayKeys.User(user).topic
            return RedisCommand("SPUBLISH", key: topic, [topic, "channels"])
        }
        _ = try? await self.redis.pipeline(commands)
    }

    /// Members were added to `channel` by `events` (its new `member_joined` events): each
    /// added user's connections start following it from exactly that event.
    func joined(channel: String, events: [String]) async {
        var commands: [RedisCommand] = []
        for event in events {
            guard case .joined(let user)? = EventMembership.of(json: event),
                let seq = EventJSON.field(.seq, in: event)
            else { continue }
            let topic = RelayKeys.User(user).topic
            commands.append(RedisCommand("SPUBLISH", key: topic, [topic, "joined \(channel) \(seq)"]))
        }
        guard !commands.isEmpty else { return }
        _ = try? await self.redis.pipeline(commands)
    }
}
