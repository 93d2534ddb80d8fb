import RedisClient

/// Tells every relay that some users' channel sets changed, so their live connections start
/// (or stop) following those channels. Best effort: a connection also re-reads its channel
/// set when it resumes, so a lost notice delays nothing that matters for correctness.
struct RealtimeNotifier: Sendable {
    let redis: RedisClient

    func channelsChanged(for users: [String]) async {
        let commands = Set(users).map { user in
            let topic = RelayKeys.User(user).topic
            return RedisCommand("SPUBLISH", key: topic, [topic, "channels"])
        }
        _ = try? await self.redis.pipeline(commands)
    }
}
