import Foundation
import RedisClient
import Relay
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The relay on a Redis Cluster (3 primaries, 3 replicas): everything a user does, across all
/// shards, across relays, through a failover and a resharding.
@Suite(.serialized) struct ClusterRelayTests {
    /// Group ids whose slots cover every primary of `cluster`, `perPrimary` on each.
    private func channelsOnEveryShard(_ cluster: RedisClusterProcess, perPrimary: Int = 2) async throws -> [String] {
        let primaries = try await cluster.primaries(asSeenBy: cluster.nodes[0].port)
        var byPrimary = [Int: [String]]()
        var index = 0
        while byPrimary.count < primaries.count || byPrimary.values.contains(where: { $0.count < perPrimary }) {
            index += 1
            let id = TestRedis.uniqueName("cl")
            let slot = Int(HashSlot(key: id).rawValue)
            guard let owner = try await cluster.owner(ofSlot: slot, asSeenBy: cluster.nodes[0].port) else { continue }
            if byPrimary[owner.port, default: []].count < perPrimary { byPrimary[owner.port, default: []].append(id) }
            try #require(index < 1000)
        }
        return byPrimary.values.flatMap { $0 }
    }

    @Test func twoRelaysServeEveryShardLiveAndOnResume() async throws {
        let cluster = try await SharedRedisCluster.get()
        let secret = randomBytes(32)
        let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
        let channels = try await self.channelsOnEveryShard(cluster)
        let configure: RelayConfigurator = { $0.jwtSecret = secret }
        try await withRelay(configure, redisURL: cluster.urls) { first in
            try await withRelay(configure, redisURL: cluster.seedURL) { second in
                for channel in channels { try await first.createGroup(alice, members: [bob], id: channel) }
                try await withSockets { sockets in
                    let onFirst = try await TestSocket.connect(first, token: first.token(alice), label: "alice@first")
                    sockets.append(onFirst)
                    let onSecond = try await TestSocket.connect(second, token: second.token(bob), label: "bob@second")
                    sockets.append(onSecond)
                    // Sends through both relays, to every channel.
                    var expected = [String: Int]()
                    for round in 0..<4 {
                        for channel in channels {
                            let relay = round % 2 == 0 ? first : second
                            let event = try await relay.send(round % 2 == 0 ? alice : bob, channel, "r\(round)")
                            expected[channel] = event["seq"].int
                        }
                    }
                    for channel in channels {
                        let last = try #require(expected[channel])
                        for socket in [onFirst, onSecond] {
                            try await socket.waitUntil("\(channel) up to \(last)") { _ in socket.seqs(channel).last == last }
                        }
                        // Live from the first event the socket saw, gap-free, on both relays.
                        for socket in [onFirst, onSecond] {
                            let seen = socket.seqs(channel)
                            expectSeqs(seen, Array((seen.first ?? 1)...last), "\(socket.label) \(channel)")
                        }
                        // The log is the same through either relay.
                        let viaFirst = try await first.allEvents(alice, channel)
                        let viaSecond = try await second.allEvents(bob, channel)
                        expectSeqs(seqs(viaFirst), Array(1...last), "history of \(channel)")
                        #expect(seqs(viaSecond) == seqs(viaFirst))
                    }
                    // Resume on the second relay from a cursor in every channel.
                    let resumer = try await TestSocket.connect(second, token: second.token(alice), label: "resumer")
                    sockets.append(resumer)
                    let start = resumer.frames.count
                    try await resumer.send(json: ["type": "resume", "cursors": Dictionary(uniqueKeysWithValues: channels.map { ($0, 1) })])
                    _ = try await resumer.waitFor("resumed", from: start) { $0["type"].string == "resumed" }
                    for channel in channels {
                        expectSeqs(Array(Set(resumer.seqs(channel))).sorted(), Array(2...expected[channel]!), "resume of \(channel)")
                    }
                }
            }
        }
    }

    /// A cluster short of a shard (a primary gone, no replica to take over) refuses every
    /// command on a key, although its nodes still answer `PING`: `/healthz` says 503, so that a
    /// load balancer sends no one to a relay that can serve nothing, and 200 again once it is back.
    ///
    /// Meanwhile a pipeline of many commands for the lost shard fails within one retry budget
    /// (about 4 s), not one per command (a resume of a few channels took a minute).
    @Test func healthSays503WhileTheClusterIsDown() async throws {
        _ = try await SharedRedisCluster.get()
        let cluster = try await RedisClusterProcess(primaries: 3, replicas: 0)
        let victim = cluster.nodes[2]
        var lostKeys: [String] = []
        while lostKeys.count < 20 {
            let key = TestRedis.uniqueName("lost")
            let owner = try await cluster.owner(ofSlot: Int(HashSlot(key: key).rawValue), asSeenBy: cluster.nodes[0].port)
            if owner?.port == victim.port { lostKeys.append(key) }
        }
        let redis = RedisClient(configuration: try RedisConfiguration(url: cluster.urls))
        try await withRelay(redisURL: cluster.urls) { relay in
            #expect(try await relay.request("GET", "/healthz").status == 200)
            try await onOwnThread { victim.kill() }
            try await waitUntil("/healthz says 503", timeout: .seconds(30)) {
                try await relay.request("GET", "/healthz").status == 503
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await redis.run() }
                defer { group.cancelAll() }
                let started = ContinuousClock.now
                let results = try await redis.pipeline(lostKeys.map { RedisCommand("GET", key: $0, [$0]) })
                #expect(results.allSatisfy { (try? $0.get()) == nil }, "every command for the lost shard fails")
                #expect(ContinuousClock.now - started < .seconds(20), "one retry budget, not one per command")
            }
            try await onOwnThread { try victim.start() }
            try await waitUntil("/healthz says 200 again", timeout: .seconds(30)) {
                try await relay.request("GET", "/healthz").status == 200
            }
        }
    }

    @Test func aPrimaryKilledUnderLoadLosesNoAcknowledgedMessageWithRedisWait() async throws {
        // After the shared cluster: six servers starting at a time are enough for a loaded machine.
        _ = try await SharedRedisCluster.get()
        let cluster = try await RedisClusterProcess()
        let user = TestRedis.uniqueName("u")
        let channels = try await self.channelsOnEveryShard(cluster, perPrimary: 1)
        let configure: RelayConfigurator = {
            $0.redisWait = 1
            $0.redisWaitTimeout = .milliseconds(500)
        }
        try await withRelay(configure, redisURL: cluster.urls) { relay in
            for channel in channels { try await relay.createGroup(user, id: channel) }
            try await withSockets { sockets in
                let socket = try await TestSocket.connect(relay, token: relay.token(user), label: "watcher")
                sockets.append(socket)
                let victimSlot = Int(HashSlot(key: channels[0]).rawValue)
                let victim = try #require(try await cluster.owner(ofSlot: victimSlot, asSeenBy: cluster.nodes[0].port))
                let victimNode = try #require(cluster.node(port: victim.port))
                let acknowledged = Locked<[(channel: String, seq: Int, clientMessageID: String)]>([])
                let killed = Locked(false)
                // A sender per channel: each message retried with its client_msg_id until acknowledged.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for channel in channels {
                        group.addTask {
                            let deadline = ContinuousClock.now + .seconds(90)
                            var sentAfterRecovery = 0
                            var index = 0
                            while sentAfterRecovery < 15 {
                                index += 1
                                let clientMessageID = "m\(index)"
                                while true {
                                    try #require(ContinuousClock.now < deadline, "no acknowledgement for \(channel) within 90 s")
                                    let response = try await relay.request(
                                        "POST",
                                        "/channels/\(channel)/messages",
                                        token: relay.token(user),
                                        json: ["client_msg_id": clientMessageID, "text": "t\(index)"]
                                    )
                                    if response.status == 201 || response.status == 200 {
                                        let seq = try #require(response.value["message"]["seq"].int)
                                        acknowledged.withLock { $0.append((channel, seq, clientMessageID)) }
                                        break
                                    }
                                    #expect(response.status == 503, "\(response)")
                                    try await Task.sleep(for: .milliseconds(100))
                                }
                                if killed.value { sentAfterRecovery += 1 }
                            }
                        }
                    }
                    group.addTask {
                        try await waitUntil("some messages are acknowledged") { acknowledged.withLock { $0.count } >= 30 }
                        try await onOwnThread { victimNode.kill() }
                        // The replica takes over; the old primary comes back as its replica, so
                        // that WAIT 1 can be met again.
                        try await waitUntil("a replica takes over", timeout: .seconds(30)) {
                            let owner = try? await cluster.owner(
                                ofSlot: victimSlot,
                                asSeenBy: cluster.nodes.first { $0.port != victim.port }!.port
                            )
                            return owner.map { $0.port != victim.port } ?? false
                        }
                        try await onOwnThread { try victimNode.start() }
                        killed.withLock { $0 = true }
                    }
                    try await group.waitForAll()
                }
                let acks = acknowledged.value
                for channel in channels {
                    let events = try await relay.allEvents(user, channel)
                    let messages = events.filter { $0["type"].string == "message" }
                    let top = try #require(events.last?["seq"].int)
                    expectSeqs(seqs(events), Array(1...top), "history of \(channel) after the failover")
                    // Every acknowledged message is in the log, once, at the seq it was acknowledged with.
                    let byClientID = Dictionary(grouping: messages) { $0["client_msg_id"].string ?? "" }
                    for ack in acks where ack.channel == channel {
                        let logged = byClientID[ack.clientMessageID] ?? []
                        #expect(logged.count == 1, "\(channel) \(ack.clientMessageID): logged \(logged.count) times")
                        #expect(logged.first?["seq"].int == ack.seq, "\(channel) \(ack.clientMessageID)")
                    }
                    #expect(byClientID.values.allSatisfy { $0.count == 1 }, "a message logged twice in \(channel)")
                    // The open socket got every event once, in order, without a gap, to the end.
                    try await socket.waitUntil("\(channel) up to \(top)", timeout: .seconds(30)) { _ in socket.seqs(channel).last == top }
                    let seen = socket.seqs(channel)
                    expectSeqs(seen, Array((seen.first ?? 1)...top), "the socket's \(channel)")
                    // Each event it got is the log's at that seq: none that the failover lost
                    // (whose seq the promoted replica gave to another) was pushed live.
                    let logged = Dictionary(events.map { ($0["seq"].int ?? 0, $0) }) { first, _ in first }
                    for event in socket.events(channel) where logged[event["seq"].int ?? 0] != event {
                        Issue.record(
                            "\(channel): the socket got \(event); the log holds \(String(describing: logged[event["seq"].int ?? 0]))"
                        )
                    }
                }
            }
        }
    }

    @Test func aChannelsSlotMigratedWhileWrittenAndReadLosesNothing() async throws {
        let cluster = try await SharedRedisCluster.get()
        let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
        let channel = TestRedis.uniqueName("mig")
        let slot = Int(HashSlot(key: channel).rawValue)
        try await withRelay(redisURL: cluster.urls) { relay in
            try await relay.createGroup(alice, members: [bob], id: channel)
            try await withSockets { sockets in
                let socket = try await TestSocket.connect(relay, token: relay.token(bob), label: "bob")
                sockets.append(socket)
                let acknowledged = Locked<[Int: String]>([:])
                let migrated = Locked(false)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        let deadline = ContinuousClock.now + .seconds(90)
                        var afterMigration = 0
                        var index = 0
                        while afterMigration < 20 {
                            index += 1
                            let clientMessageID = "m\(index)"
                            while true {
                                try #require(ContinuousClock.now < deadline, "no acknowledgement within 90 s")
                                let response = try await relay.request(
                                    "POST",
                                    "/channels/\(channel)/messages",
                                    token: relay.token(alice),
                                    json: ["client_msg_id": clientMessageID, "text": "t\(index)"]
                                )
                                if response.status == 201 || response.status == 200 {
                                    let seq = try #require(response.value["message"]["seq"].int)
                                    acknowledged.withLock { $0[seq] = clientMessageID }
                                    break
                                }
                                #expect(response.status == 503, "\(response)")
                                try await Task.sleep(for: .milliseconds(50))
                            }
                            if migrated.value { afterMigration += 1 }
                        }
                    }
                    group.addTask {
                        try await waitUntil("messages to migrate") { acknowledged.withLock { $0.count } >= 40 }
                        let port = cluster.nodes[0].port
                        let source = try #require(try await cluster.owner(ofSlot: slot, asSeenBy: port))
                        // A channel's keys do not grow with its messages (no key per dedup entry):
                        // its slot moves in a few batches, and a send meets split keys (TRYAGAIN)
                        // only while those run. Other tests' keys may share the slot (the cluster
                        // serves the whole run): only the channel's own are counted.
                        let keys = try await cluster.command(source.port, ["CLUSTER", "GETKEYSINSLOT", "\(slot)", "1000"])
                        let own = keys.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("ch:{\(channel)}:") }
                        #expect(!own.isEmpty && own.count <= 9, "the channel's keys in its slot: \(own)")
                        let target = try #require(try await cluster.primaries(asSeenBy: port).first { $0.id != source.id && !$0.failed })
                        try await cluster.migrate(slot: slot, to: target, batch: 3, pause: .milliseconds(30))
                        migrated.withLock { $0 = true }
                    }
                    try await group.waitForAll()
                }
                let acks = acknowledged.value
                let events = try await relay.allEvents(alice, channel)
                let top = try #require(events.last?["seq"].int)
                expectSeqs(seqs(events), Array(1...top), "history after the migration")
                for (seq, clientMessageID) in acks {
                    #expect(events.first { $0["seq"].int == seq }?["client_msg_id"].string == clientMessageID, "seq \(seq)")
                }
                try await socket.waitUntil("live up to \(top)", timeout: .seconds(30)) { _ in socket.seqs(channel).last == top }
                let seen = socket.seqs(channel)
                expectSeqs(seen, Array((seen.first ?? 1)...top), "the socket")
            }
        }
    }
}

/// A value shared by a test's concurrent tasks.
private final class Locked<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value

    init(_ value: Value) { self.stored = value }

    var value: Value { self.lock.withLock { self.stored } }

    func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        try self.lock.withLock { try body(&self.stored) }
    }
}
