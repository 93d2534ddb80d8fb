import Foundation
import RedisClient
import TestSupport
import Testing

@testable import Relay

@Suite("Redis outage", .timeLimit(.minutes(5)))
struct RedisOutageTests {
    /// Redis is killed (SIGKILL) under a running relay and started again on the same port and
    /// files: meanwhile requests get a prompt 503, afterwards the relay serves again by itself, and
    /// every acknowledged message is still there with its seq.
    @Test func relayAnswers503WhileRedisIsDownAndRecoversWithoutLosingAcknowledgedMessages() async throws {
        let redis = try await durableRedis()
        defer { redis.stop() }
        try await withRelay(redisURL: redis.url) { relay in
            var relay = relay
            // The bound on "promptly": a request that takes longer fails the test as hung.
            relay.requestTimeout = .seconds(15)
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            var acknowledged: [JSON] = []
            for index in 0..<10 {
                acknowledged.append(
                    try await relay.send(index.isMultiple(of: 2) ? alice : bob, id, "before \(index)", clientMessageID: "before-\(index)")
                )
            }
            #expect(seqs(acknowledged) == Array(3...12))
            #expect(try await relay.request("GET", "/healthz").status == 200)

            try await runOnOwnThread { redis.kill() }

            for index in 0..<3 {
                try await relay.sendUnavailable(alice, id, "during \(index)", clientMessageID: "during-\(index)")
            }
            expectError(try await relay.request("GET", "/channels/\(id)/messages", token: relay.token(alice)), 503, "unavailable")
            expectError(try await relay.request("GET", "/channels", token: relay.token(bob)), 503, "unavailable")
            expectError(try await relay.request("GET", "/channels/\(id)", token: relay.token(bob)), 503, "unavailable")
            expectError(
                try await relay.request("POST", "/channels", token: relay.token(bob), json: ["type": "group", "members": [alice]]),
                503,
                "unavailable"
            )
            expectError(
                try await relay.request("POST", "/channels/\(id)/read", token: relay.token(bob), json: ["seq": 3]),
                503,
                "unavailable"
            )
            let health = try await relay.request("GET", "/healthz")
            #expect(health.status == 503, "\(health)")

            try await runOnOwnThread { try redis.start() }

            try await waitUntil("the relay's /healthz is 200 again", timeout: .seconds(30)) {
                try await relay.request("GET", "/healthz").status == 200
            }
            try await waitUntil("the relay serves history again", timeout: .seconds(30)) {
                try await relay.request("GET", "/channels/\(id)/messages", token: relay.token(alice)).status == 200
            }
            let events = try await relay.allEvents(bob, id)
            #expect(seqs(events) == Array(1...12), "nothing lost, nothing logged by the refused requests")
            #expect(Array(events.dropFirst(2)) == acknowledged, "every acknowledged message, as acknowledged")

            // The log goes on without a gap, and a send refused during the outage can be retried.
            let retried = try await relay.send(alice, id, "during 0", clientMessageID: "during-0")
            #expect(retried["seq"].int == 13)
            let entry = try await relay.listEntry(bob, id)
            #expect(entry["last_seq"].int == 13)
        }
    }

    /// A socket that connects while Redis is down follows its channels once Redis is back: the
    /// hub's resubscription makes it read them at once, however far its own retries have backed
    /// off (1, 2, 4 s, then 8 s more: the next falls 15 s after it connected).
    @Test func aSocketConnectedDuringAnOutageFollowsItsChannelsOnceRedisIsBack() async throws {
        let redis = try await durableRedis()
        defer { redis.stop() }
        try await withRelay(redisURL: redis.url) { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            try await runOnOwnThread { redis.kill() }
            let socket = try await TestSocket.connect(relay, token: relay.token(bob))
            defer { socket.abort() }
            try await Task.sleep(for: .seconds(8))
            try await runOnOwnThread { try redis.start() }
            try await waitUntil("the relay's /healthz is 200 again", timeout: .seconds(30)) {
                try await relay.request("GET", "/healthz").status == 200
            }
            let healthy = ContinuousClock.now
            // Sent at once, before the socket can have read its channels again: it follows each
            // from its first event since its hello, so none is missed.
            var sent: [Int] = []
            for index in 0..<3 {
                sent.append(try #require(try await relay.send(alice, id, "after the outage \(index)")["seq"].int))
            }
            let messages = { (frames: [JSON]) in
                frames.filter { $0["channel_id"].string == id && $0["type"].string == "message" }.compactMap { $0["seq"].int }
            }
            try? await socket.waitUntil("the three messages", timeout: .seconds(10)) { messages($0).count >= sent.count }
            let received = messages(socket.frames)
            #expect(received == sent, "every message sent since Redis came back, in order")
            // The socket's next retry falls about 7 s after Redis was started again.
            #expect(ContinuousClock.now - healthy < .seconds(5), "told by the resubscription, not by a retry 15 s after it connected")
        }
    }

    /// Where a socket that could not read its channels at its hello starts one found later:
    /// after the last event made before a moment (`created_at`), looking back a bounded number.
    @Test func aChannelFoundLaterStartsAtItsFirstEventSinceAMoment() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice, members: [])
            let quiet = try await relay.createGroup(alice, members: [])
            for index in 0..<3 { _ = try await relay.send(alice, id, "before \(index)") }
            try await Task.sleep(for: .milliseconds(20))
            let moment = Int64(Clock.milliseconds())
            try await Task.sleep(for: .milliseconds(20))
            for index in 0..<12 { _ = try await relay.send(alice, id, "after \(index)") }

            let redis = RedisClient(configuration: try RedisConfiguration(url: TestRedis.url))
            let store = ChatStore(redis: redis, limits: RelayLimits(), metrics: RelayMetrics())
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await redis.run() }
                defer { group.cancelAll() }
                // Seq 1 is each group's member_joined of its creator; the messages are 2...4, then 5...16
                // (more than one page of eight back).
                let atMoment = try await store.seqs(before: moment, channels: [id, quiet])
                let beforeAll = try await store.seqs(before: 0, channels: [id])
                let afterAll = try await store.seqs(before: moment + 60_000, channels: [id])
                let bounded = try await store.seqs(before: moment, channels: [id], limit: 10)
                #expect(atMoment == [id: 4, quiet: 1])
                #expect(beforeAll == [id: 0])
                #expect(afterAll == [id: 16])
                #expect(bounded == [id: 6], "looks back ten events at most")
            }
        }
    }

    /// A Redis that hangs holds the answers to a socket's frames; the relay reads no more of
    /// them meanwhile, and does not take that for the client's silence: the socket stays open
    /// through four heartbeats, and every send is answered once Redis wakes.
    @Test func aSocketWaitingOnAHungRedisIsNotClosedAsSilent() async throws {
        let redis = try await runOnOwnThread { try RedisServerProcess() }
        defer {
            redis.resume()
            redis.stop()
        }
        let configure: RelayConfigurator = { $0.heartbeat = .seconds(1) }
        try await withRelay(configure, redisURL: redis.url) { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            try await withSockets { sockets in
                let socket = try await TestSocket.connect(relay, token: relay.token(alice), label: "alice")
                sockets.append(socket)
                redis.pause()
                for index in 0..<20 {
                    try await socket.send(json: ["type": "send", "channel_id": id, "client_msg_id": "h\(index)", "text": "held"])
                }
                try await Task.sleep(for: .seconds(4))
                redis.resume()
                try await socket.waitUntil("an answer to every send", timeout: .seconds(30)) { frames in
                    frames.filter { ["ack", "error"].contains($0["type"].string ?? "") }.count == 20
                }
                #expect(socket.closeCode == nil, "closed with \(socket.closeCode ?? 0)")
            }
        }
    }

    /// A Redis that takes too long to answer (here busy for 6 s) is down for `/healthz`, which
    /// says so within its bound instead of after the command timeout.
    @Test func healthzIs503PromptlyWhileRedisIsFrozen() async throws {
        let redis = try await runOnOwnThread { try RedisServerProcess() }
        defer { redis.stop() }
        try await withRelay(redisURL: redis.url) { relay in
            #expect(try await relay.request("GET", "/healthz").status == 200)
            async let frozen = redisCLI(["DEBUG", "SLEEP", "6"], port: redis.port)
            try await Task.sleep(for: .milliseconds(300))
            let asked = ContinuousClock.now
            let health = try await relay.request("GET", "/healthz", timeout: .seconds(10))
            #expect(health.status == 503, "\(health)")
            #expect(ContinuousClock.now - asked < .seconds(4), "answered within its bound")
            _ = try await frozen
            try await waitUntil("the relay's /healthz is 200 again", timeout: .seconds(30)) {
                try await relay.request("GET", "/healthz").status == 200
            }
        }
    }

    @Test func healthzIs503WhileRedisIsDown() async throws {
        let redis = try await runOnOwnThread { try RedisServerProcess() }
        defer { redis.stop() }
        try await withRelay(redisURL: redis.url) { relay in
            var relay = relay
            relay.requestTimeout = .seconds(15)
            #expect(try await relay.request("GET", "/healthz").status == 200)
            try await runOnOwnThread { redis.kill() }
            // /healthz asks Redis on each call: down at once, then up once it is back.
            let down = try await relay.request("GET", "/healthz")
            #expect(down.status == 503, "\(down)")
            let again = try await relay.request("GET", "/healthz")
            #expect(again.status == 503, "\(again)")
            // Metrics need no Redis.
            #expect(try await relay.request("GET", "/metrics").status == 200)
            try await runOnOwnThread { try redis.start() }
            try await waitUntil("the relay's /healthz is 200 again", timeout: .seconds(30)) {
                try await relay.request("GET", "/healthz").status == 200
            }
        }
    }
}
