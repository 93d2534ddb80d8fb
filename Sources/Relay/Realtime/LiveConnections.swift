import Synchronization

/// The relay's open WebSockets, so that a stopping relay can close each of them with 1001
/// (going away) itself, before the server's own shutdown closes them with 1000.
final class LiveConnections: Sendable {
    private struct State {
        var connections: [ObjectIdentifier: LiveConnection] = [:]
        var closing = false
    }
    private let state = Mutex(State())
    private let metrics: RelayMetrics

    init(metrics: RelayMetrics) {
        self.metrics = metrics
    }

    /// Adds a connection; false once ``closeAll(code:reason:)`` has run (the relay is stopping).
    func add(_ connection: LiveConnection) -> Bool {
        let count = self.state.withLock { state -> Int? in
            guard !state.closing else { return nil }
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

    /// Closes every connection with `code`; connections added later are refused.
    func closeAll(code: UInt16, reason: String) {
        let connections = self.state.withLock { state in
            state.closing = true
            return Array(state.connections.values)
        }
        for connection in connections {
            connection.requestClose(code: code, reason: reason)
        }
    }

    /// Returns once every connection has ended, or after `timeout`.
    func waitUntilEmpty(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while self.count > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}
