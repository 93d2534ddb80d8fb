import Foundation
import NIOCore
import NIOPosix
import TestSupport
import Testing

@testable import RedisClient

/// The client and the subscriber against a real Redis Cluster (3 primaries, 3 replicas).
@Suite(.serialized) struct ClusterTests {
    /// Starts moving `key`'s slot from its owner to another primary (`MIGRATING` there, `IMPORTING`
    /// at the target) and moves `key` itself; the rest of the slot stays at the source.
    private func startMigration(
        of key: String,
        in cluster: RedisClusterProcess
    ) async throws -> (slot: Int, target: RedisClusterProcess.Primary) {
        let slot = Int(HashSlot(key: key).rawValue)
        let port = cluster.nodes[0].port
        let source = try #require(try await cluster.owner(ofSlot: slot, asSeenBy: port))
        let target = try #require(try await cluster.primaries(asSeenBy: port).first { $0.id != source.id && !$0.failed })
        try await cluster.command(target.port, ["CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", source.id])
        try await cluster.command(source.port, ["CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", target.id])
        try await cluster.command(source.port, ["MIGRATE", "127.0.0.1", "\(target.port)", "", "0", "5000", "KEYS", key])
        return (slot, target)
    }

    /// Keys spread over all three shards, with their values.
    private func keysOnEveryShard(_ prefix: String, count: Int = 60) -> [String] {
        (0..<count).map { "\(prefix):{k\($0)}" }
    }

    @Test func detectsTheClusterAndRoutesEveryKeyToItsOwner() async throws {
        let cluster = try await SharedRedisCluster.get()
        try await withRedisClient(try configuration(url: cluster.seedURL)) { client in
            let prefix = TestRedis.uniqueName("route")
            let keys = self.keysOnEveryShard(prefix)
            for key in keys { try await client.set(key, to: "v-\(key)") }
            #expect(client.isCluster)
            for key in keys { #expect(try await client.get(key).map { String(buffer: $0) } == "v-\(key)") }
            // Each key is stored on its slot's owner, and the keys cover every primary.
            var owners = Set<Int>()
            for key in keys {
                let slot = Int(HashSlot(key: key).rawValue)
                let owner = try #require(try await cluster.owner(ofSlot: slot, asSeenBy: cluster.nodes[0].port))
                #expect(try await cluster.command(owner.port, ["GET", key]) == "v-\(key)\n")
                owners.insert(owner.port)
            }
            #expect(owners.count == 3)
            // The variadic form routes by its first argument.
            #expect(try await client.execute("GET", keys[0]).string == "v-\(keys[0])")
            #expect(try await client.execute("PING") == .simpleString("PONG"))
        }
    }

    @Test func aPipelineIsSplitByNodeAndAnsweredInOrder() async throws {
        let cluster = try await SharedRedisCluster.get()
        try await withRedisClient(try configuration(url: cluster.seedURL)) { client in
            let keys = self.keysOnEveryShard(TestRedis.uniqueName("pipe"), count: 90)
            let writes = try await client.pipeline(keys.enumerated().map { RedisCommand("SET", key: $1, [$1, "\($0)"]) })
            #expect(writes.allSatisfy { (try? $0.get()) == .simpleString("OK") })
            var reads = [RedisCommand]()
            for key in keys {
                reads.append(RedisCommand("GET", key: key, [key]))
                reads.append(RedisCommand("INCR", key: key, [key]))
            }
            let results = try await client.pipeline(reads)
            #expect(results.count == keys.count * 2)
            for index in keys.indices {
                #expect(try results[2 * index].get().string == "\(index)")
                #expect(try results[2 * index + 1].get().int == Int64(index + 1))
            }
            // A command's own error stays its result, in its place.
            let mixed = try await client.pipeline([
                RedisCommand("GET", key: keys[0], [keys[0]]),
                RedisCommand("HGET", key: keys[1], [keys[1], "f"]),
                RedisCommand("GET", key: keys[2], [keys[2]]),
            ])
            #expect(try mixed[0].get().string == "1")
            #expect((try? mixed[1].get()) == nil)
            #expect(try mixed[2].get().string == "3")
        }
    }

    /// Commands run for their effect alone on a cluster: each node's share goes to that node.
    @Test func commandsRunWithoutRepliesReachEveryKeysOwner() async throws {
        let cluster = try await SharedRedisCluster.get()
        try await withRedisClient(try configuration(url: cluster.seedURL)) { client in
            let keys = self.keysOnEveryShard(TestRedis.uniqueName("silent"), count: 90)
            try await client.executeWithoutReplies(
                keys.map { RedisEncodedCommand(RedisCommand("SET", key: $0, [$0, "v-\($0)"])) },
                batch: 40
            )
            #expect(client.isCluster)
            for key in keys { #expect(try await client.get(key).map { String(buffer: $0) } == "v-\(key)") }
        }
    }

    @Test func scriptsRunOnTheirSlotsNodeAndAreLoadedThereWhenMissing() async throws {
        let cluster = try await SharedRedisCluster.get()
        let script = RedisScript("redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])")
        try await withRedisClient(try configuration(url: cluster.seedURL)) { client in
            let keys = self.keysOnEveryShard(TestRedis.uniqueName("script"), count: 30)
            for node in cluster.nodes { try await cluster.command(node.port, ["SCRIPT", "FLUSH"]) }
            for key in keys {
                #expect(try await client.run(script, keys: [key], arguments: ["x-\(key)"]).string == "x-\(key)")
            }
            // Loaded by EVAL on each primary: EVALSHA works there now.
            for primary in try await cluster.primaries(asSeenBy: cluster.nodes[0].port) {
                #expect(try await cluster.command(primary.port, ["SCRIPT", "EXISTS", script.sha1]) == "1\n")
            }
        }
    }

    @Test func followsAskDuringAMigrationAndMovedAfterIt() async throws {
        let cluster = try await SharedRedisCluster.get()
        try await withRedisClient(try configuration(url: cluster.seedURL)) { client in
            let tag = TestRedis.uniqueName("ask")
            let moved = "{\(tag)}:moved"
            let stays = "{\(tag)}:stays"
            let fresh = "{\(tag)}:fresh"
            try await client.set(moved, to: "m")
            try await client.set(stays, to: "s")
            // Half-way through a migration: one key at the target, one still at the source.
            let (slot, target) = try await self.startMigration(of: moved, in: cluster)
            #expect(try await client.get(moved).map { String(buffer: $0) } == "m")
            #expect(try await client.get(stays).map { String(buffer: $0) } == "s")
            // A new key of a migrating slot is created at the target (ASK).
            try await client.set(fresh, to: "f")
            // The migration ends: the slot belongs to the target, and the client follows MOVED.
            try await cluster.migrate(slot: slot, to: target)
            #expect(try await client.get(moved).map { String(buffer: $0) } == "m")
            #expect(try await client.get(stays).map { String(buffer: $0) } == "s")
            #expect(try await client.get(fresh).map { String(buffer: $0) } == "f")
            try await waitUntil("the client learns the new owner") {
                client.clusterTopology?.primary(for: HashSlot(key: moved))?.port == target.port
            }
        }
    }

    /// A pipeline's commands redirected during a migration (`ASK`) and after it (`MOVED`) are
    /// each answered where the cluster says, in their places among the others.
    @Test func aPipelineFollowsAskAndMoved() async throws {
        let cluster = try await SharedRedisCluster.get()
        try await withRedisClient(try configuration(url: cluster.seedURL)) { client in
            let tag = TestRedis.uniqueName("pipe-ask")
            let moved = "{\(tag)}:moved"
            let stays = "{\(tag)}:stays"
            let others = self.keysOnEveryShard(TestRedis.uniqueName("pipe-other"), count: 12)
            for key in [moved, stays] + others { try await client.set(key, to: "v-\(key)") }
            let reads = ([moved, stays] + others).map { RedisCommand("GET", key: $0, [$0]) }
            func expectReads(_ stage: String) async throws {
                let results = try await client.pipeline(reads)
                #expect(results.count == reads.count, "\(stage)")
                for (key, result) in zip([moved, stays] + others, results) {
                    #expect((try? result.get().string) == "v-\(key)", "\(stage): \(key)")
                }
            }
            let (slot, target) = try await self.startMigration(of: moved, in: cluster)
            try await expectReads("during the migration")
            try await cluster.migrate(slot: slot, to: target)
            try await expectReads("after it")
        }
    }

    /// A script run from an event loop goes straight to the node the client knows; redirected
    /// there (the script did not run), it is run again where the cluster says.
    @Test func scriptsRunImmediatelyFollowAskAndMoved() async throws {
        let cluster = try await SharedRedisCluster.get()
        let script = RedisScript("redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])")
        let eventLoop = MultiThreadedEventLoopGroup.singleton.any()
        try await withRedisClient(try configuration(url: cluster.seedURL)) { client in
            let tag = TestRedis.uniqueName("now")
            let moved = "{\(tag)}:moved"
            try await client.set(moved, to: "m")
            @Sendable func text(_ reply: RESPReply) throws -> String {
                var cursor = reply.cursor
                guard case .bulkString(let bytes)? = cursor.next() else { throw TestFailure("not a bulk string") }
                return String(decoding: bytes, as: UTF8.self)
            }
            func run(_ value: String) async throws -> String {
                try await #require(client.runUnwaitedImmediately(script, keys: [moved], arguments: [value], on: eventLoop, decode: text))
                    .get()
            }
            #expect(try await run("direct") == "direct")
            // Half-way through a migration, the key already at the target: the source answers ASK.
            let (slot, target) = try await self.startMigration(of: moved, in: cluster)
            #expect(try await run("asked") == "asked")
            // The slot now belongs to the target; the client still sends to the source: MOVED.
            try await cluster.migrate(slot: slot, to: target)
            #expect(try await run("moved") == "moved")
            #expect(try await cluster.command(target.port, ["GET", moved]) == "moved\n")
        }
    }

    @Test func readsDecodedWhereTheyLieFollowAskAndMoved() async throws {
        let cluster = try await SharedRedisCluster.get()
        let eventLoop = MultiThreadedEventLoopGroup.singleton.any()
        @Sendable func text(_ reply: RESPReply) throws -> String {
            var cursor = reply.cursor
            guard case .bulkString(let bytes)? = cursor.next() else { throw TestFailure("not a bulk string") }
            return String(decoding: bytes, as: UTF8.self)
        }
        try await withRedisClient(try configuration(url: cluster.seedURL)) { client in
            let key = "{\(TestRedis.uniqueName("read"))}:k"
            try await client.set(key, to: "value")
            let get = RedisCommand("GET", key: key, [key])
            func expectRead(_ stage: String) async throws {
                let now = try #require(client.executeImmediately(get, on: eventLoop, decode: text), "\(stage)")
                #expect(try await now.get() == "value", "\(stage), at once")
                #expect(try await client.execute(get, decode: text) == "value", "\(stage), from a task")
            }
            try await expectRead("direct")
            // Half-way through a migration, the key already at the target: the source answers ASK.
            let (slot, target) = try await self.startMigration(of: key, in: cluster)
            try await expectRead("asked")
            // The slot now belongs to the target; the client still sends to the source: MOVED.
            try await cluster.migrate(slot: slot, to: target)
            try await expectRead("moved")
        }
    }

    @Test func writesWaitForTheirReplicas() async throws {
        let cluster = try await SharedRedisCluster.get()
        let script = RedisScript("return redis.call('INCR', KEYS[1])")
        var waiting = try configuration(url: cluster.seedURL)
        waiting.replicaWait = 1
        try await withRedisClient(waiting) { client in
            let key = "{\(TestRedis.uniqueName("wait"))}:n"
            let value = try await client.run(script, keys: [key], arguments: [])
            #expect(value.int == 1)
        }
        // Two replicas are more than any shard has: the write runs, but is not acknowledged.
        var impossible = try configuration(url: cluster.seedURL)
        impossible.replicaWait = 2
        impossible.replicaWaitTimeout = .milliseconds(100)
        try await withRedisClient(impossible) { client in
            let key = "{\(TestRedis.uniqueName("wait"))}:n"
            await #expect(throws: RedisError.self) { try await client.run(script, keys: [key], arguments: []) }
            do {
                try await client.run(script, keys: [key], arguments: [])
            } catch let error as RedisError {
                #expect(error.code == .unavailable)
            }
            #expect(try await client.get(key).map { String(buffer: $0) } == "2")
        }
    }

    @Test func shardedSubscriptionsFollowASlotToItsNewOwner() async throws {
        let cluster = try await SharedRedisCluster.get()
        let config = try configuration(url: cluster.seedURL)
        let subscriber = RedisSubscriber(configuration: config)
        let recorder = EventRecorder()
        try await withRedisClient(config) { client in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await subscriber.run() }
                group.addTask { for await event in subscriber.events { recorder.record(event) } }
                defer { group.cancelAll() }
                let topics = self.keysOnEveryShard(TestRedis.uniqueName("live"), count: 12)
                try await waitUntil("the subscriber is up") {
                    await subscriber.subscribe(topics)
                }
                for topic in topics { try await client.shardPublish(topic, "before") }
                try await waitUntil("every topic's message arrives") {
                    Set(recorder.messages.filter { $0.payload == "before" }.map(\.topic)) == Set(topics)
                }
                // Move the slot of one topic: the server drops its subscribers, the subscriber
                // subscribes at the new owner and says so.
                let topic = topics[0]
                let slot = Int(HashSlot(key: topic).rawValue)
                let port = cluster.nodes[0].port
                let source = try #require(try await cluster.owner(ofSlot: slot, asSeenBy: port))
                let target = try #require(try await cluster.primaries(asSeenBy: port).first { $0.id != source.id && !$0.failed })
                try await cluster.migrate(slot: slot, to: target)
                try await waitUntil("the moved topic is announced as resubscribed") {
                    recorder.resubscriptions.contains { $0.contains(topic) }
                }
                // Live again from the new owner (published until it arrives: the announcement
                // may come a moment before the subscription is confirmed).
                try await waitUntil("a message published at the new owner arrives") {
                    try await client.shardPublish(topic, "after")
                    try await Task.sleep(for: .milliseconds(50))
                    return recorder.messages.contains { $0.topic == topic && $0.payload == "after" }
                }
                #expect(subscriber.topics == Set(topics))
                subscriber.unsubscribe(topics)
                #expect(subscriber.topics.isEmpty)
            }
        }
    }

    @Test func aSeedListIsParsed() throws {
        let configuration = try RedisConfiguration(url: "redis://:pw@10.0.0.1:7000, redis://10.0.0.2:7001,redis://10.0.0.1:7000")
        #expect(configuration.host == "10.0.0.1")
        #expect(configuration.port == 7000)
        #expect(configuration.password == "pw")
        #expect(configuration.seeds == [RedisEndpoint(host: "10.0.0.1", port: 7000), RedisEndpoint(host: "10.0.0.2", port: 7001)])
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis://a:1,,redis://b:2") }
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis://a:1,http://b:2") }
    }
}

/// Redirection replies as a cluster node sends them.
@Suite struct ClusterRedirectionTests {
    @Test func parsesMovedAndAsk() {
        #expect(
            RedisClusterRedirection(RedisError(.serverError, "MOVED 3999 127.0.0.1:6381"))
                == .moved(HashSlot(rawValue: 3999)!, RedisEndpoint(host: "127.0.0.1", port: 6381))
        )
        #expect(
            RedisClusterRedirection(RedisError(.serverError, "ASK 12182 10.1.2.3:7002"))
                == .ask(HashSlot(rawValue: 12182)!, RedisEndpoint(host: "10.1.2.3", port: 7002))
        )
        #expect(
            RedisClusterRedirection(RedisError(.serverError, "MOVED 1 :7000"))
                == .moved(HashSlot(rawValue: 1)!, RedisEndpoint(host: "127.0.0.1", port: 7000))
        )
        #expect(RedisClusterRedirection(RedisError(.serverError, "TRYAGAIN Multiple keys request during rehashing")) == .retryLater)
        #expect(RedisClusterRedirection(RedisError(.serverError, "CLUSTERDOWN The cluster is down")) == .retryLater)
        #expect(RedisClusterRedirection(RedisError(.serverError, "LOADING Redis is loading")) == .retryLater)
        #expect(RedisClusterRedirection(RedisError(.unavailable, "connection refused")) == nil)
        #expect(RedisClusterRedirection(RedisError(.serverError, "MOVED 99999 h:1")) == nil)
        #expect(RedisClusterRedirection(RedisError(.serverError, "ERR wrong number of arguments")) == nil)
        #expect(RedisClusterRedirection(RedisError(.connectionClosed, "closed")) == nil)
    }

    @Test func parsesTopologyReplies() throws {
        func bulk(_ text: String) -> RESPValue { .bulkString(ByteBuffer(string: text)) }
        let shards: RESPValue = .array([
            .array([
                bulk("slots"), .array([.integer(0), .integer(5460)]),
                bulk("nodes"),
                .array([
                    .array([
                        bulk("id"), bulk("a"), bulk("port"), .integer(7000), bulk("ip"), bulk("127.0.0.1"), bulk("role"), bulk("master"),
                        bulk("health"), bulk("online"),
                    ]),
                    .array([
                        bulk("id"), bulk("b"), bulk("port"), .integer(7003), bulk("ip"), bulk("127.0.0.1"), bulk("role"), bulk("replica"),
                        bulk("health"), bulk("online"),
                    ]),
                ]),
            ]),
            .array([
                bulk("slots"), .array([.integer(5461), .integer(16383)]),
                bulk("nodes"),
                .array([
                    .array([
                        bulk("id"), bulk("c"), bulk("port"), .integer(7001), bulk("ip"), bulk("127.0.0.1"), bulk("role"), bulk("master"),
                        bulk("health"), bulk("online"),
                    ])
                ]),
            ]),
        ])
        let topology = try RedisClusterTopology(shardsReply: shards, defaultHost: "127.0.0.1")
        #expect(topology.coversAllSlots)
        #expect(topology.primary(for: HashSlot(rawValue: 0)!)?.port == 7000)
        #expect(topology.primary(for: HashSlot(rawValue: 5461)!)?.port == 7001)
        #expect(topology.shards[0].replicas == [RedisEndpoint(host: "127.0.0.1", port: 7003)])

        let slots: RESPValue = .array([
            .array([.integer(0), .integer(100), .array([bulk("127.0.0.1"), .integer(7000), bulk("a")])])
        ])
        let partial = try RedisClusterTopology(slotsReply: slots, defaultHost: "127.0.0.1")
        #expect(!partial.coversAllSlots)
        #expect(partial.primary(for: HashSlot(rawValue: 100)!)?.port == 7000)
        #expect(partial.primary(for: HashSlot(rawValue: 101)!) == nil)
    }
}
