import Foundation
import RedisClient
import TestSupport
import Testing

@testable import Relay

/// Membership exact at a seq on a live socket, and the outbound budget, against a real relay
/// and Redis over real sockets.
@Suite("Live membership and budget")
struct LiveMembershipAndBudgetTests {
    /// The channel events in `bytes` (a raw socket's), as JSON, in order.
    static func events(in bytes: [UInt8], channel: String) -> [JSON] {
        StalledSocket.frames(in: bytes).filter { $0.opcode == 0x1 }.compactMap { JSON(parsing: $0.payload) }
            .filter { $0["channel_id"].string == channel && $0["seq"].int != nil }
    }

    /// A member added while the channel could not be written to its index (its user's shard
    /// down; here the index key is of another type) is indexed again later: its open socket
    /// then follows the channel from its own `member_joined`, and `GET /channels` lists it,
    /// though the call that added it failed after its script ran and no one retried it.
    @Test func aMemberWhoseIndexCouldNotBeWrittenIsIndexedLater() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice)
            try await withSockets { sockets in
                let socket = try await TestSocket.connect(relay, token: relay.token(bob))
                sockets.append(socket)
                let index = "user:{\(bob)}:channels"
                _ = try await redisCLI(["SET", index, "not a set"])
                let added = try await relay.request("POST", "/channels/\(id)/members", token: relay.token(alice), json: ["user_id": bob])
                expectError(added, 500, "internal")
                #expect(try await redisCLI(["SISMEMBER", "ch:{\(id)}:members", bob]) == ["1"], "the script ran")
                _ = try await redisCLI(["DEL", index])

                let joined = try await socket.waitFor("bob's own member_joined", timeout: .seconds(10)) {
                    $0["channel_id"].string == id && $0["type"].string == "member_joined"
                }
                #expect(joined["user_id"].string == bob, "\(joined)")
                #expect(try await relay.listEntry(bob, id) != nil)
                let next = try #require(try await relay.send(alice, id, "after the repair")["seq"].int)
                try await socket.waitUntil("the next message") { _ in socket.seqs(id).contains(next) }
                #expect(socket.seqs(id) == [next - 1, next])
            }
        }
    }

    /// Bob added to Alice's group, whose entry in Bob's index is then lost (`redis-cli` on
    /// `port`, following a cluster's redirections).
    static func addedWithItsIndexEntryLost(
        _ relay: RelayTestClient,
        port: Int = TestRedis.port
    ) async throws -> (alice: String, bob: String, channel: String) {
        let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
        let id = try await relay.createGroup(alice)
        let added = try await relay.request("POST", "/channels/\(id)/members", token: relay.token(alice), json: ["user_id": bob])
        #expect(added.status == 200, "\(added)")
        _ = try await redisCLI(["-c", "SREM", "user:{\(bob)}:channels", id], port: port)
        return (alice, bob, id)
    }

    /// Runs `body` with a relay on the suite's shared Redis Cluster, where a user's index lives on
    /// another shard than the channel, so that a failover may lose an entry the call wrote; and
    /// the port of a node for `redis-cli`.
    static func withClusterRelay(_ body: (RelayTestClient, Int) async throws -> Void) async throws {
        let cluster = try await SharedRedisCluster.get()
        try await withRelay(redisURL: cluster.urls) { relay in try await body(relay, cluster.nodes[0].port) }
    }

    /// A member whose index entry was written and then lost (as to a primary that took it and
    /// was demoted) has it written again a few seconds after the call: a socket it opened
    /// meanwhile, which found no such channel, then follows it from its own `member_joined`.
    @Test func aMemberWhoseIndexEntryWasLostIsIndexedAgain() async throws {
        try await Self.withClusterRelay { relay, port in
            let (_, bob, id) = try await Self.addedWithItsIndexEntryLost(relay, port: port)
            try await withSockets { sockets in
                let socket = try await TestSocket.connect(relay, token: relay.token(bob))
                sockets.append(socket)
                let joined = try await socket.waitFor("bob's own member_joined", timeout: .seconds(15)) {
                    $0["channel_id"].string == id && $0["type"].string == "member_joined"
                }
                #expect(joined["user_id"].string == bob, "\(joined)")
                #expect(try await relay.listEntry(bob, id) != nil)
            }
        }
    }

    /// A member whose index entry was lost, and who was removed before the entry was checked
    /// again, still gets its window: its socket reads the channel from its own `member_joined`
    /// to its own `member_left`, and nothing after.
    @Test func aMemberWhoseIndexEntryWasLostAndWhoLeftGetsItsWindow() async throws {
        try await Self.withClusterRelay { relay, port in
            let (alice, bob, id) = try await Self.addedWithItsIndexEntryLost(relay, port: port)
            try await withSockets { sockets in
                let socket = try await TestSocket.connect(relay, token: relay.token(bob))
                sockets.append(socket)
                let during = try #require(try await relay.send(alice, id, "while bob is in")["seq"].int)
                let removed = try await relay.request("DELETE", "/channels/\(id)/members/\(bob)", token: relay.token(alice))
                #expect(removed.status == 200, "\(removed)")
                let after = try #require(try await relay.send(alice, id, "after bob left")["seq"].int)
                _ = try await socket.waitFor("bob's own member_left", timeout: .seconds(15)) {
                    $0["channel_id"].string == id && $0["type"].string == "member_left"
                }
                try await Task.sleep(for: .milliseconds(300))
                #expect(socket.seqs(id) == [during - 1, during, after - 1], "from its member_joined to its member_left")
            }
        }
    }

    /// On one Redis without replicas to wait for, an index entry written is not written again
    /// later: a failover there would lose the call that made the member too. (Removed by hand
    /// here, it stays removed past the first check a cluster would make.)
    @Test func onOneRedisAnIndexEntryWrittenIsNotCheckedAgain() async throws {
        try await withRelay { relay in
            let (_, bob, id) = try await Self.addedWithItsIndexEntryLost(relay)
            try await Task.sleep(for: IndexRepairs.checks[0] + .seconds(2))
            #expect(try await redisCLI(["SISMEMBER", "user:{\(bob)}:channels", id]) == ["0"])
        }
    }

    /// A member removed while its socket is busy replaying thousands of events reads the
    /// channel up to and including its own `member_left`, and nothing after it: neither the
    /// rest of the replay nor what is posted live afterwards.
    @Test func aMemberRemovedDuringALongReplayGetsNothingAfterItsMemberLeft() async throws {
        try await withRelay { relay in
            let (owner, bob) = (TestRedis.uniqueName("owner"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(owner, members: [bob])
            let other = try await relay.createGroup(owner, members: [bob])
            try await withThrowingTaskGroup(of: Void.self) { group in
                for lane in 0..<10 {
                    group.addTask { for index in 0..<200 { try await relay.send(owner, id, "before \(lane)/\(index)") } }
                }
                try await group.waitForAll()
            }
            // A small receive buffer and no reading: the replay stalls on the socket's buffer.
            let socket = try await StalledSocket.open(port: relay.port, token: relay.token(bob), receiveBuffer: 4096)
            _ = try await socket.read(timeout: .seconds(5)) { String(decoding: $0, as: UTF8.self).contains("\"hello\"") }
            try socket.sendText("{\"type\":\"resume\",\"cursors\":{\"\(id)\":0}}")
            try await Task.sleep(for: .milliseconds(300))

            let removed = try await relay.request("DELETE", "/channels/\(id)/members/\(bob)", token: relay.token(owner))
            #expect(removed.status == 200, "\(removed)")
            let leftSeq = try #require(removed.value["event"]["seq"].int, "\(removed)")
            for index in 0..<20 { try await relay.send(owner, id, "after \(index)") }
            let marker = try await relay.send(owner, other, "marker")

            // Now read everything: the replay, `resumed`, then the marker on the other channel.
            let markerSeq = try #require(marker["seq"].int)
            let (bytes, _) = try await socket.read(timeout: .seconds(60)) { bytes in
                let text = String(decoding: bytes, as: UTF8.self)
                return text.contains("\"type\":\"resumed\"") && text.contains("\"text\":\"marker\"")
            }
            #expect(Self.events(in: bytes, channel: other).contains { $0["seq"].int == markerSeq }, "the marker arrived")
            let seqs = Self.events(in: bytes, channel: id).compactMap { $0["seq"].int }
            expectSeqs(seqs, Array(1...leftSeq), "the removed member's socket")
            let last = Self.events(in: bytes, channel: id).last
            #expect(last?["type"].string == "member_left" && last?["user_id"].string == bob)
        }
    }

    /// A user removed and added again and again, concurrently, reads on each of its sockets the
    /// events of the windows it was a member in, by the log (from each of its own `member_joined`
    /// to its `member_left`), in order and nothing between: every window from the first one its
    /// socket starts at. That first one may be a later window than the first of all: the
    /// notices of joins are published after their scripts, and concurrent requests may publish
    /// them out of order.
    @Test func aUserAddedAndRemovedAtOnceGetsExactlyItsWindows() async throws {
        try await withRelay { relay in
            let (owner, carol) = (TestRedis.uniqueName("owner"), TestRedis.uniqueName("carol"))
            let id = try await relay.createGroup(owner)
            let sockets = [
                try await TestSocket.connect(relay, token: relay.token(carol, session: "s1"), label: "carol s1"),
                try await TestSocket.connect(relay, token: relay.token(carol, session: "s2"), label: "carol s2"),
            ]
            defer { for socket in sockets { socket.abort() } }
            for _ in 0..<6 {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<8 {
                        group.addTask {
                            let response =
                                index % 2 == 0
                                ? try await relay.request(
                                    "POST",
                                    "/channels/\(id)/members",
                                    token: relay.token(owner),
                                    json: ["user_id": carol]
                                )
                                : try await relay.request("DELETE", "/channels/\(id)/members/\(carol)", token: relay.token(owner))
                            #expect([200, 404].contains(response.status), "\(response)")
                        }
                    }
                    try await group.waitForAll()
                }
            }
            _ = try await relay.request("DELETE", "/channels/\(id)/members/\(carol)", token: relay.token(owner))
            let marker = try await relay.send(owner, id, "after carol is out")
            var windows: [Int] = []
            var inside = false
            for event in try await relay.allEvents(owner, id) {
                let own = event["user_id"].string == carol
                if own && event["type"].string == "member_joined" { inside = true }
                if inside, let seq = event["seq"].int { windows.append(seq) }
                if own && event["type"].string == "member_left" { inside = false }
            }
            #expect(windows.last ?? 0 < (marker["seq"].int ?? 0))
            let last = try #require(windows.last, "carol was never a member")
            for socket in sockets {
                try await socket.waitUntil("carol's last own event, \(last)") { frames in
                    frames.contains { $0["channel_id"].string == id && $0["seq"].int == last }
                }
            }
            // Anything after it would have come by now: the marker is posted and published.
            try await Task.sleep(for: .milliseconds(500))
            for socket in sockets {
                let seqs = socket.seqs(id)
                let start = try #require(
                    windows.firstIndex(of: seqs.first ?? 0),
                    "\(socket.label) starts outside the windows: \(seqs.prefix(5))"
                )
                let event = try await relay.allEvents(owner, id).first { $0["seq"].int == windows[start] }
                #expect(event?["type"].string == "member_joined" && event?["user_id"].string == carol, "\(socket.label) starts at a join")
                expectSeqs(seqs, Array(windows[start...]), socket.label)
            }
        }
    }

    /// A user added in a batch of far more than a page of events still starts at its own
    /// `member_joined` on a socket that was open before, and gets what follows it.
    @Test func aUserAddedInALargeBatchStartsAtItsOwnMemberJoined() async throws {
        try await withRelay { relay in
            let owner = TestRedis.uniqueName("owner")
            let bob = TestRedis.uniqueName("bob")
            let id = try await relay.createGroup(owner)
            let socket = try await TestSocket.connect(relay, token: relay.token(bob), label: "bob")
            defer { socket.abort() }
            let others = (0..<250).map { TestRedis.uniqueName("u\($0)") }
            let added = try await relay.request(
                "POST",
                "/channels/\(id)/members",
                token: relay.token(owner),
                json: ["user_ids": others + [bob]]
            )
            #expect(added.status == 200, "\(added)")
            let message = try await relay.send(owner, id, "welcome")
            let top = try #require(message["seq"].int)
            _ = try await socket.waitFor("the message after the batch") { $0["channel_id"].string == id && $0["seq"].int == top }
            let events = socket.events(id)
            #expect(events.first?["type"].string == "member_joined" && events.first?["user_id"].string == bob, "\(events.prefix(2))")
            expectSeqs(socket.seqs(id), Array((top - 1)...top), "from bob's own member_joined on")
        }
    }

    /// A resume from a cursor the user was out of the channel at (its own `member_left`, or
    /// after it) replays from its next `member_joined`: nothing posted while it was out, on any
    /// relay, even once retention has trimmed that `member_left`. From a cursor before the
    /// `member_left`, the replay runs to it and then skips the same stretch.
    @Test func aResumeSkipsWhatWasPostedWhileTheUserWasOut() async throws {
        let configure: RelayConfigurator = { $0.retention.maxEvents = 12 }
        try await withRelay(configure) { relay in
            let (owner, bob) = (TestRedis.uniqueName("owner"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(owner, members: [bob])
            try await relay.send(owner, id, "while bob is in")
            let removed = try await relay.request("DELETE", "/channels/\(id)/members/\(bob)", token: relay.token(owner))
            let left = try #require(removed.value["event"]["seq"].int, "\(removed)")
            for index in 0..<3 { try await relay.send(owner, id, "secret \(index)") }
            let added = try await relay.request("POST", "/channels/\(id)/members", token: relay.token(owner), json: ["user_id": bob])
            #expect(added.status == 200, "\(added)")
            let joined = left + 4
            let welcome = try #require(try await relay.send(owner, id, "welcome back")["seq"].int)

            /// The seqs of `id` a resume from `cursor` replays.
            func replay(from cursor: Int) async throws -> [Int] {
                let socket = try await TestSocket.connect(relay, token: relay.token(bob), label: "bob from \(cursor)")
                defer { socket.abort() }
                let start = socket.frames.count
                try await socket.send(json: ["type": "resume", "cursors": [id: cursor]])
                _ = try await socket.waitFor("resumed", from: start) { $0["type"].string == "resumed" }
                return socket.seqs(id)
            }
            for cursor in [left, left + 1, joined - 1] {
                expectSeqs(try await replay(from: cursor), [joined, welcome], "from \(cursor), bob being out")
            }
            expectSeqs(try await replay(from: 1), [2, 3, left, joined, welcome], "from before bob left")
            #expect(try await relay.allEvents(owner, id).first?["seq"].int == 1, "nothing trimmed yet")

            // Retention trims the member_left: a resume from the log's start still skips.
            for index in 0..<8 { try await relay.send(owner, id, "more \(index)") }
            let first = try #require(try await relay.channel(owner, id)["first_seq"].int)
            #expect(left < first && first <= joined, "the log starts after bob's member_left: \(first)")
            let last = try await relay.lastSeq(owner, id)
            expectSeqs(try await replay(from: 0), Array(joined...last), "from 0 after the trim")
        }
    }

    /// Where a new connection starts each channel of its user's index: at the channel's last
    /// seq, and only where the user is a member right after it. A user removed before the read
    /// is not followed there (its `member_left` came before the connection started), whatever
    /// the index still says; one removed and added again is; a channel made before membership
    /// was recorded is judged by its member set.
    @Test func aConnectionStartsOnlyWhereItsUserIsAMemberAtTheAnchor() async throws {
        try await withRelay { relay in
            let (owner, bob) = (TestRedis.uniqueName("owner"), TestRedis.uniqueName("bob"))
            let left = try await relay.createGroup(owner, members: [bob])
            let back = try await relay.createGroup(owner, members: [bob])
            let legacy = try await relay.createGroup(owner, members: [bob])
            let never = try await relay.createGroup(owner, members: [])
            for id in [left, back, legacy, never] { try await relay.send(owner, id, "hello") }
            for id in [left, back] {
                let removed = try await relay.request("DELETE", "/channels/\(id)/members/\(bob)", token: relay.token(owner))
                #expect(removed.status == 200, "\(removed)")
            }
            let added = try await relay.request("POST", "/channels/\(back)/members", token: relay.token(owner), json: ["user_id": bob])
            #expect(added.status == 200, "\(added)")

            let redis = RedisClient(configuration: try RedisConfiguration(url: TestRedis.url))
            let store = ChatStore(redis: redis, limits: RelayLimits(), metrics: RelayMetrics())
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await redis.run() }
                defer { group.cancelAll() }
                _ = try await redis.execute("DEL", RelayKeys.Channel(legacy).membership)
                let anchors = try await store.anchors(channels: [left, back, legacy, never], user: bob)
                #expect(anchors.complete)
                let expected = [
                    back: Int64(try await relay.lastSeq(owner, back)),
                    legacy: Int64(try await relay.lastSeq(owner, legacy)),
                ]
                #expect(anchors.seqs == expected, "only where bob is in: \(anchors.seqs)")
            }
        }
    }

    /// A resume from below where retention trimmed the log replays from the log's first event,
    /// and `resumed` says so for that channel (`truncated`), and for no other.
    @Test func aResumeBelowTheTrimmedLogSaysWhereItBegins() async throws {
        let configure: RelayConfigurator = { $0.retention.maxEvents = 5 }
        try await withRelay(configure) { relay in
            let alice = TestRedis.uniqueName("alice")
            let trimmed = try await relay.createGroup(alice)
            let whole = try await relay.createGroup(alice)
            for index in 0..<11 { try await relay.send(alice, trimmed, "m\(index)") }
            try await relay.send(alice, whole, "one")
            let first = try #require(try await relay.channel(alice, trimmed)["first_seq"].int)
            let last = try await relay.lastSeq(alice, trimmed)
            #expect(first > 1)

            let socket = try await TestSocket.connect(relay, token: relay.token(alice), label: "alice")
            defer { socket.abort() }
            let start = socket.frames.count
            try await socket.send(json: ["type": "resume", "cursors": [trimmed: 0, whole: 1]])
            let resumed = try await socket.waitFor("resumed", from: start) { $0["type"].string == "resumed" }
            #expect(resumed["truncated"][trimmed].int == first, "\(resumed)")
            #expect(resumed["truncated"][whole] == nil, "only the trimmed channel: \(resumed)")
            expectSeqs(socket.seqs(trimmed), Array(first...last), "from the log's first event")
        }
    }
}
