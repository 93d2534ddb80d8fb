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
        var joins: [(user: String, seq: Int64)] = []
        for event in events {
            guard case .joined(let user)? = EventMembership.of(json: event),
                let seq = EventJSON.field(.seq, in: event).flatMap({ Int64($0) })
            else { continue }
            joins.append((user, seq))
        }
        await self.joined(channel: channel, joins: joins)
    }

    /// Each user's connections follow `channel` from that user's `member_joined` at its seq (to
    /// its `member_left`, should it have left since); a connection that read past it already
    /// takes it as old news.
    func joined(channel: String, joins: [(user: String, seq: Int64)]) async {
        guard !joins.isEmpty else { return }
        let commands = joins.map { join in
            let topic = RelayKeys.User(join.user).topic
            return RedisCommand("SPUBLISH", key: topic, [topic, "joined \(channel) \(join.seq)"])
        }
        _ = try? await self.redis.pipeline(commands)
    }
}
