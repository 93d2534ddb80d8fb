import NIOCore
import Synchronization

/// The relay's open WebSockets, so that a stopping relay can close each of them with 1001
/// (going away) itself, before the server's own shutdown closes them with 1000.
final class LiveConnections: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var closing = false
    }
    private let state = Mutex(State())
    private let metrics: RelayMetrics

    init(metrics: RelayMetrics) {
        self.metrics = metrics
    }

    /// Adds a connection; false once ``closeAll(code:reason:)`` has run (the relay is stopping).
    func add(_ channel: any Channel) -> Bool {
        let count = self.state.withLock { state -> Int? in
            guard !state.closing else { return nil }
            state.channels[ObjectIdentifier(channel)] = channel
            return state.channels.count
        }
        guard let count else { return false }
        self.metrics.openWebSockets(count)
        return true
    }

    func remove(_ channel: any Channel) {
        let count = self.state.withLock { state in
            state.channels.removeValue(forKey: ObjectIdentifier(channel))
            return state.channels.count
        }
        self.metrics.openWebSockets(count)
    }

    var count: Int {
        self.state.withLock { $0.channels.count }
    }

    /// Sends every connection a close frame with `code` and closes it; connections added later are refused.
    func closeAll(code: UInt16, reason: String) {
        let channels = self.state.withLock { state in
            state.closing = true
            return Array(state.channels.values)
        }
        for channel in channels {
            LiveConnection.closeNow(channel, code: code, reason: reason)
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
