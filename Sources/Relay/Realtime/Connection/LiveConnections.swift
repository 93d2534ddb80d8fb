import Synchronization

/// The relay's open WebSockets, and whether it is draining: a stopping relay refuses new
/// upgrades and answers `/healthz` with 503 from the moment it is told to stop, so that a load
/// balancer sends no one new, then closes each open socket with 1001 (going away) itself,
/// before the server's own shutdown would close them with 1000.
final class LiveConnections: Sendable {
    private struct State {
        var connections: [ObjectIdentifier: LiveConnection] = [:]
        var draining = false
    }
    private let state = Mutex(State())
    private let metrics: RelayMetrics

    init(metrics: RelayMetrics) {
        self.metrics = metrics
    }

    /// Whether the relay is stopping: no new WebSocket is accepted, and `/healthz` says 503.
    var isDraining: Bool {
        self.state.withLock { $0.draining }
    }

    /// Adds a connection; false once the relay is draining.
    func add(_ connection: LiveConnection) -> Bool {
        let count = self.state.withLock { state -> Int? in
            guard !state.draining else { return nil }
            state.connections[ObjectIdentifier(connection)] = connection
            return state.connections.count
        }
        guard let count else { return false }
        self.metrics.openWebSockets(count)
        return true
    }

    func remove(_ connection: LiveConnection) {
        let count = self.state.withLock { state in
            state.connections.removeValue(forKey: ObjectIdentifier(connection))
            return state.connections.count
        }
        self.metrics.openWebSockets(count)
    }

    var count: Int {
        self.state.withLock { $0.connections.count }
    }

    /// Drains, and closes every open connection with `code`.
    func closeAll(code: UInt16, reason: String) {
        let connections = self.state.withLock { state in
            state.draining = true
            return Array(state.connections.values)
        }
        for connection in connections {
            connection.close(code: code, reason: reason)
        }
    }

    /// Returns once every connection has ended, after `timeout`, or once the task is cancelled.
    func waitUntilEmpty(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while self.count > 0, ContinuousClock.now < deadline, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}
