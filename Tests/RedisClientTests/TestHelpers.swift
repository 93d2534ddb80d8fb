import Foundation
import NIOCore
import NIOPosix
import RedisClient
import Synchronization
import TestSupport
import Testing

/// Runs `body` with a client whose connections are kept by `run()` in a child task.
func withRedisClient<T: Sendable>(
    _ configuration: RedisConfiguration,
    eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
    _ body: (RedisClient) async throws -> T
) async throws -> T {
    let client = RedisClient(configuration: configuration, eventLoopGroup: eventLoopGroup)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await client.run() }
        defer { group.cancelAll() }
        return try await body(client)
    }
}

func configuration(url: String = TestRedis.url, timeout: Duration = .seconds(5)) throws -> RedisConfiguration {
    var configuration = try RedisConfiguration(url: url)
    configuration.commandTimeout = timeout
    configuration.minimumBackoff = .milliseconds(20)
    configuration.maximumBackoff = .milliseconds(200)
    configuration.healthCheckInterval = .milliseconds(500)
    return configuration
}

/// Polls `condition` until it holds, failing the test after `timeout`.
func waitUntil(
    _ what: String,
    timeout: Duration = .seconds(10),
    _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw TestFailure("timed out waiting until \(what)")
}

/// Retries a command until the client answers again (it reconnects by itself), on every
/// connection of its pool.
///
/// After a restart, a connection whose close its event loop has not read yet still looks up,
/// and the one command sent on it fails. Commands go round-robin over the connections that
/// look up, so once as many in a row as the pool holds succeed, none of them is such a one.
func waitForRecovery(_ client: RedisClient) async throws {
    try await waitUntil("the client recovers") {
        for _ in 0..<max(1, client.configuration.poolSize) {
            guard (try? await client.execute("PING")) == .simpleString("PONG") else { return false }
        }
        return true
    }
}

/// Runs `body` again, a bounded number of times, while it fails with a retriable error.
///
/// A connection may lose its server after ``waitForRecovery(_:)`` saw it answer (CI runs every
/// suite at once on two cores, and a loop may read a close late); its caller then gets one
/// retriable error, as the client promises. A caller that retries such errors must succeed.
@discardableResult
func retryingTransportErrors<T>(_ body: () async throws -> T) async throws -> T {
    for _ in 0..<4 {
        do {
            return try await body()
        } catch let error as RedisError where error.isRetriable {
            try await Task.sleep(for: .milliseconds(50))
        }
    }
    return try await body()
}

/// Collects what a subscriber delivers, for a test to inspect.
final class EventRecorder: Sendable {
    private let events = Mutex<[RedisSubscriberEvent]>([])

    func record(_ event: RedisSubscriberEvent) {
        self.events.withLock { $0.append(event) }
    }

    var messages: [(topic: String, payload: String)] {
        self.events.withLock { events in
            events.compactMap { event in
                if case .message(let topic, let payload) = event { return (topic, String(buffer: payload)) }
                return nil
            }
        }
    }

    var resubscriptions: [[String]] {
        self.events.withLock { events in
            events.compactMap { event in
                if case .resubscribed(let topics) = event { return topics }
                return nil
            }
        }
    }
}
