import Synchronization

/// Writes whose replicas did not acknowledge them within `WAIT`'s timeout, per connection, until
/// they do. One task per connection asks `WAIT replicas 1` (answered at once, blocking nothing
/// behind it) every ``interval``, and hands back every write registered before that ask once
/// enough replicas hold the connection's writes (`WAIT` counts a connection's own writes, in
/// order). A write waits at most ``patience``; at most ``maxWaiting`` wait per connection.
final class LateReplication: Sendable {
    static let interval = Duration.milliseconds(500)
    static let patience = Duration.seconds(30)
    static let maxWaiting = 10_000

    private struct Waiting {
        var reply: RESPValue
        var then: @Sendable (RESPValue) async -> Void
        var deadline: ContinuousClock.Instant
    }

    private let waiting = Mutex<[ObjectIdentifier: [Waiting]]>([:])

    /// Calls `then` with `reply` once `replicas` hold what `connection` wrote so far; never if
    /// the connection closes first (one opened again has written nothing: its `WAIT` would prove
    /// nothing), nor after ``patience``.
    func add(_ reply: RESPValue, on connection: RedisConnection, replicas: Int, then: @escaping @Sendable (RESPValue) async -> Void) {
        let key = ObjectIdentifier(connection)
        let entry = Waiting(reply: reply, then: then, deadline: .now + Self.patience)
        let startWatching = self.waiting.withLock { waiting -> Bool in
            guard var list = waiting[key] else {
                waiting[key] = [entry]
                return true
            }
            guard list.count < Self.maxWaiting else { return false }
            list.append(entry)
            waiting[key] = list
            return false
        }
        if startWatching {
            Task { await self.watch(connection, replicas: replicas) }
        }
    }

    private func watch(_ connection: RedisConnection, replicas: Int) async {
        let key = ObjectIdentifier(connection)
        while true {
            try? await Task.sleep(for: Self.interval)
            // Only the writes registered before this ask: they were written before it.
            let asked = self.waiting.withLock { $0[key]?.count ?? 0 }
            var acknowledged: Int64?
            if connection.isActive {
                acknowledged = try? await connection.execute(RedisCommand("WAIT", [replicas, 1])).int
            }
            let now = ContinuousClock.now
            let (due, done) = self.waiting.withLock { waiting -> ([Waiting], Bool) in
                guard var list = waiting[key] else { return ([], true) }
                guard let acknowledged else {
                    waiting[key] = nil
                    return ([], true)
                }
                var due: [Waiting] = []
                if acknowledged >= replicas {
                    due = Array(list.prefix(asked))
                    list.removeFirst(min(asked, list.count))
                }
                list.removeAll { $0.deadline < now }
                waiting[key] = list.isEmpty ? nil : list
                return (due, list.isEmpty)
            }
            for entry in due { await entry.then(entry.reply) }
            if done { return }
        }
    }
}
