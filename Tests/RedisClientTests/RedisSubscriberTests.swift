import NIOCore
import NIOPosix
import TestSupport
import Testing

@testable import RedisClient

@Suite("Sharded Pub/Sub subscriber", .timeLimit(.minutes(2)))
struct RedisSubscriberTests {
    /// Runs a subscriber whose events go to a recorder, beside a client to publish with.
    func withSubscriber(
        url: String,
        _ body: (RedisSubscriber, EventRecorder, RedisClient) async throws -> Void
    ) async throws {
        let subscriber = RedisSubscriber(configuration: try configuration(url: url))
        let recorder = EventRecorder()
        try await withRedisClient(try configuration(url: url)) { client in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await subscriber.run() }
                group.addTask { for await event in subscriber.events { recorder.record(event) } }
                defer { group.cancelAll() }
                try await body(subscriber, recorder, client)
            }
        }
    }

    @Test func deliversMessagesOfSubscribedTopicsOnly() async throws {
        let topic = "{\(TestRedis.uniqueName())}:live"
        let other = "{\(TestRedis.uniqueName())}:live"
        try await withSubscriber(url: TestRedis.url) { subscriber, recorder, client in
            try await waitUntil("the subscriber connects") {
                await subscriber.subscribe([topic])
                return try await client.execute("PUBSUB", "SHARDNUMSUB", topic).array?.last?.int == 1
            }
            // On a live connection, subscribe returns once Redis has the subscription.
            let third = "{\(TestRedis.uniqueName())}:live"
            #expect(await subscriber.subscribe([third]))
            #expect(try await client.execute("PUBSUB", "SHARDNUMSUB", third).array?.last?.int == 1)
            subscriber.unsubscribe([third])

            let before = recorder.messages.count
            try await client.shardPublish(other, "ignored")
            for index in 0..<50 { try await client.shardPublish(topic, "m\(index)") }
            try await waitUntil("50 messages arrive") { recorder.messages.count - before >= 50 }
            let received = recorder.messages.dropFirst(before).filter { $0.topic == topic }.map(\.payload)
            #expect(received.suffix(50) == (0..<50).map { "m\($0)" })
            #expect(!recorder.messages.contains { $0.topic == other })

            subscriber.unsubscribe([topic])
            try await waitUntil("the subscription is dropped") {
                try await client.execute("PUBSUB", "SHARDNUMSUB", topic).array?.last?.int == 0
            }
            let count = recorder.messages.count
            try await client.shardPublish(topic, "after")
            try await Task.sleep(for: .milliseconds(100))
            #expect(recorder.messages.count == count)
        }
    }

    @Test func aSubscribeWithoutAConnectionReturnsAtOnceUnconfirmed() async throws {
        let subscriber = RedisSubscriber(configuration: try configuration(url: TestRedis.url))
        let topic = "{\(TestRedis.uniqueName())}:live"
        #expect(await subscriber.subscribe([topic]) == false, "not running, so not connected")
        #expect(subscriber.topics == [topic], "kept, to subscribe on connect")
    }

    @Test func resubscribesAfterItsConnectionIsKilledAndSaysSo() async throws {
        let server = try RedisServerProcess()
        let topic = "{\(TestRedis.uniqueName())}:live"
        try await withSubscriber(url: server.url) { subscriber, recorder, client in
            try await waitForRecovery(client)
            try await waitUntil("the subscriber connects") {
                await subscriber.subscribe([topic])
                return try await client.execute("PUBSUB", "SHARDNUMSUB", topic).array?.last?.int == 1
            }
            try await client.shardPublish(topic, "one")
            try await waitUntil("the first message arrives") { recorder.messages.contains { $0.payload == "one" } }
            let resubscriptions = recorder.resubscriptions.count

            try await client.execute("CLIENT", "KILL", "TYPE", "pubsub")
            try await waitUntil("the subscriber says it resubscribed") {
                recorder.resubscriptions.count > resubscriptions
            }
            #expect(recorder.resubscriptions.last == [topic])
            try await client.shardPublish(topic, "two")
            try await waitUntil("a message after the reconnect arrives") { recorder.messages.contains { $0.payload == "two" } }
            #expect(recorder.messages.map(\.payload) == ["one", "two"])
        }
    }

    @Test func topicsSubscribedWhileRedisIsDownAreSubscribedWhenItReturns() async throws {
        let server = try RedisServerProcess()
        let topic = "{\(TestRedis.uniqueName())}:live"
        try await withSubscriber(url: server.url) { subscriber, recorder, client in
            try await waitForRecovery(client)
            server.kill()
            await subscriber.subscribe([topic])
            #expect(subscriber.topics.contains(topic))
            try server.start()
            try await waitUntil("the subscriber resubscribes") { recorder.resubscriptions.contains { $0.contains(topic) } }
            try await waitForRecovery(client)
            // Published until it arrives: should the connection drop once more, one would be lost.
            try await waitUntil("the message arrives") {
                try await retryingTransportErrors { try await client.shardPublish(topic, "back") }
                return recorder.messages.contains { $0.payload == "back" }
            }
        }
    }
}

@Suite("Sharded Pub/Sub subscriber under a paused Redis", .timeLimit(.minutes(2)))
struct RedisSubscriberPauseTests {
    @Test func aSubscriptionNeverConfirmedDoesNotWedgeTheSubscriber() async throws {
        let server = try RedisServerProcess()
        let admin = try await RedisConnection.connect(
            configuration: configuration(url: server.url),
            eventLoop: MultiThreadedEventLoopGroup.singleton.any()
        )
        defer { admin.close() }
        var subscriberConfiguration = try configuration(url: server.url, timeout: .milliseconds(300))
        subscriberConfiguration.healthCheckInterval = .milliseconds(200)
        let subscriber = RedisSubscriber(configuration: subscriberConfiguration)
        let recorder = EventRecorder()
        let first = "{\(TestRedis.uniqueName())}:live"
        let second = "{\(TestRedis.uniqueName())}:live"
        try await withRedisClient(try configuration(url: server.url)) { client in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await subscriber.run() }
                group.addTask { for await event in subscriber.events { recorder.record(event) } }
                defer { group.cancelAll() }
                try await waitUntil("the subscriber connects") {
                    await subscriber.subscribe([first])
                    return try await client.execute("PUBSUB", "SHARDNUMSUB", first).array?.last?.int == 1
                }
                // While Redis sleeps, a new subscription gets no confirmation: the subscriber must
                // give up on that connection, reconnect, and resubscribe both topics.
                async let pause = admin.execute(RedisCommand("DEBUG", ["SLEEP", "1"]))
                try await Task.sleep(for: .milliseconds(100))
                await subscriber.subscribe([second])
                _ = try await pause
                try await waitUntil("both topics are subscribed again") {
                    recorder.resubscriptions.contains { Set($0) == [first, second] }
                }
                try await waitForRecovery(client)
                // On a loaded machine the 300 ms health check may drop the connection again, and a
                // message published meanwhile is lost (and announced): keep publishing.
                try await waitUntil("a message arrives") {
                    try await retryingTransportErrors { try await client.shardPublish(second, "after the pause") }
                    return recorder.messages.contains { $0.payload == "after the pause" }
                }
            }
        }
    }

    @Test func unsubscribingWhileASubscribeWaitsReleasesIt() async throws {
        let server = try RedisServerProcess()
        let admin = try await RedisConnection.connect(
            configuration: configuration(url: server.url),
            eventLoop: MultiThreadedEventLoopGroup.singleton.any()
        )
        defer { admin.close() }
        let subscriber = RedisSubscriber(configuration: try configuration(url: server.url, timeout: .seconds(30)))
        let topic = "{\(TestRedis.uniqueName())}:live"
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await subscriber.run() }
            group.addTask { for await _ in subscriber.events {} }
            defer { group.cancelAll() }
            try await waitUntil("the subscriber connects") {
                await subscriber.subscribe(["{\(TestRedis.uniqueName())}:warm-up"])
            }
            async let pause = admin.execute(RedisCommand("DEBUG", ["SLEEP", "2"]))
            try await Task.sleep(for: .milliseconds(100))
            let started = ContinuousClock.now
            async let waiting = subscriber.subscribe([topic])
            try await Task.sleep(for: .milliseconds(100))
            subscriber.unsubscribe([topic])
            _ = await waiting
            #expect(ContinuousClock.now - started < .seconds(1.5), "the subscribe returned when its topic was dropped")
            _ = try await pause
        }
    }
}
