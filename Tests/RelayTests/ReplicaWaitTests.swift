import Foundation
import Relay
import TestSupport
import Testing

/// `--redis-wait`: a write is acknowledged once replicas hold it, and only then pushed live, so
/// that no socket sees an event a failover could still lose (its seq would then go to another).
@Suite("Writes pushed live once replicas hold them (--redis-wait)", .timeLimit(.minutes(5)))
struct ReplicaWaitTests {
    /// Runs `body` with a relay that waits for one replica (`--redis-wait 1`, `timeout`) of a
    /// private primary, the replica in sync; afterwards the replica is let go (should `body` have
    /// frozen it) and both are stopped. `body` gets the relay, the replica and the primary.
    static func withWaitingRelay(
        timeout: Duration,
        _ body: (RelayTestClient, RedisServerProcess, RedisServerProcess) async throws -> Void
    ) async throws {
        let primary = try await runOnOwnThread { try RedisServerProcess() }
        let replica = try await runOnOwnThread { try RedisServerProcess(arguments: ["--replicaof", "127.0.0.1", "\(primary.port)"]) }
        defer {
            replica.resume()
            replica.stop()
            primary.stop()
        }
        try await waitUntil("the replica is in sync", timeout: .seconds(30)) {
            // INFO's lines end with CR LF, one Character to Swift: no split into lines.
            try await redisCLI(["INFO", "replication"], port: primary.port).joined().contains(
                "slave0:ip=127.0.0.1,port=\(replica.port),state=online"
            )
        }
        let configure: RelayConfigurator = {
            $0.redisWait = 1
            $0.redisWaitTimeout = timeout
        }
        try await withRelay(configure, redisURL: primary.url) { relay in try await body(relay, replica, primary) }
    }

    /// A relay that waits for a replica the shared test Redis does not have: every write is
    /// answered 503 after 200 ms, and happened all the same.
    static var unheld: RelayConfigurator {
        {
            $0.redisWait = 1
            $0.redisWaitTimeout = .milliseconds(200)
        }
    }

    /// Creates group `id` of `alice` and `bob` through an ``unheld`` relay: answered 503, made.
    static func createUnheld(_ id: String, by alice: String, with bob: String, on relay: RelayTestClient) async throws {
        let body: [String: Any] = ["type": "group", "members": [bob], "id": id]
        expectError(try await relay.request("POST", "/channels", token: relay.token(alice), json: body), 503, "unavailable")
    }

    /// With no replica to hold it, a send is answered 503; its event, although in the primary's
    /// log, goes out live to no socket. The channel's next event brings it, from the log, in order.
    @Test func anEventNoReplicaHoldsIsNotPushedLive() async throws {
        let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
        try await withRelay { plain in
            try await withRelay({
                $0.redisWait = 1
                $0.redisWaitTimeout = .milliseconds(200)
            }) { waiting in
                let id = try await plain.createGroup(alice, members: [bob])
                try await withSockets { sockets in
                    // Bob watches through the relay that waits for replicas, and through the other.
                    let viaWaiting = try await TestSocket.connect(waiting, token: waiting.token(bob), label: "via waiting")
                    let viaPlain = try await TestSocket.connect(plain, token: plain.token(bob), label: "via plain")
                    sockets += [viaWaiting, viaPlain]
                    let first = try #require(try await plain.send(alice, id, "first")["seq"].int)
                    for socket in sockets {
                        try await socket.waitUntil("the first message") { _ in socket.seqs(id).contains(first) }
                    }

                    // Sent through the relay that waits for a replica, which never answers.
                    func sendUnheld() async throws {
                        try await waiting.sendUnavailable(alice, id, "no replica holds this", clientMessageID: "unheld")
                    }
                    try await sendUnheld()
                    // The primary logged it...
                    let logged = try await plain.allEvents(bob, id)
                    let unheld = try #require(logged.last)
                    #expect(unheld["client_msg_id"].string == "unheld")
                    let unheldSeq = try #require(unheld["seq"].int)
                    #expect(unheldSeq == first + 1)
                    // ...and a retry finds it, still without a replica: 503 again.
                    try await sendUnheld()
                    // No socket was told of it (a push arrives within milliseconds).
                    try await Task.sleep(for: .milliseconds(500))
                    for socket in sockets {
                        #expect(!socket.seqs(id).contains(unheldSeq), "\(socket.label) got an event no replica held")
                    }

                    // The next event, written without waiting, brings it from the log, in order.
                    let next = try #require(try await plain.send(alice, id, "next")["seq"].int)
                    for socket in sockets {
                        try await socket.waitUntil("the next message") { _ in socket.seqs(id).contains(next) }
                        expectSeqs(socket.seqs(id), Array(first...next), "\(socket.label)")
                        #expect(socket.events(id).first { $0["seq"].int == unheldSeq }?["client_msg_id"].string == "unheld")
                    }
                }
            }
        }
    }

    /// A group created while no replica answers is answered 503, and a retry finds its id taken
    /// (409); the group is made all the same, and every member finds it in `GET /channels`.
    @Test func aGroupCreatedWithoutItsReplicasIsListedForItsMembers() async throws {
        let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
        let id = TestRedis.uniqueName("unheld")
        try await withRelay(Self.unheld) { waiting in
            try await Self.createUnheld(id, by: alice, with: bob, on: waiting)
            let body: [String: Any] = ["type": "group", "members": [bob], "id": id]
            expectError(try await waiting.request("POST", "/channels", token: waiting.token(alice), json: body), 409, "conflict")
            for user in [alice, bob] {
                let listed = try await waiting.request("GET", "/channels", token: waiting.token(user))
                #expect(listed.value["channels"].array?.contains { $0["id"].string == id } == true, "\(user): \(listed)")
            }
        }
    }

    /// A member removed while no replica answers is answered 503, and the removal happened all
    /// the same: the channel leaves the user's index (a new socket of the user then has no
    /// channel to follow there), while the members it kept stay indexed.
    @Test func aMemberRemovedWithoutItsReplicasLeavesItsIndex() async throws {
        let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
        let id = TestRedis.uniqueName("unheld")
        try await withRelay(Self.unheld) { waiting in
            try await Self.createUnheld(id, by: alice, with: bob, on: waiting)
            let removed = try await waiting.request("DELETE", "/channels/\(id)/members/\(bob)", token: waiting.token(alice))
            expectError(removed, 503, "unavailable")
            #expect(try await redisCLI(["SISMEMBER", "ch:{\(id)}:members", bob]) == ["0"], "the removal ran")
            #expect(try await redisCLI(["SMEMBERS", "user:{\(bob)}:channels"]).contains(id) == false)
            #expect(try await redisCLI(["SMEMBERS", "user:{\(alice)}:channels"]).contains(id))
        }
    }

    /// A replica that holds a write only after its call gave up (503): the event goes out live
    /// then, not with the channel's next event; and a user added meanwhile is followed on its
    /// open socket from its own `member_joined`, and listed in `GET /channels`.
    @Test func writesReplicasHoldLateArePushedLiveThen() async throws {
        let (alice, bob, carol) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"), TestRedis.uniqueName("carol"))
        try await Self.withWaitingRelay(timeout: .seconds(1)) { relay, replica, _ in
            let id = try await relay.createGroup(alice, members: [bob])
            try await withSockets { sockets in
                let bobSocket = try await TestSocket.connect(relay, token: relay.token(bob), label: "bob")
                let carolSocket = try await TestSocket.connect(relay, token: relay.token(carol), label: "carol")
                sockets += [bobSocket, carolSocket]

                // The replica is frozen through the calls' wait: they give up, the writes stay.
                replica.pause()
                try await relay.sendUnavailable(alice, id, "held late", clientMessageID: "late")
                let added = try await relay.request("POST", "/channels/\(id)/members", token: relay.token(alice), json: ["user_id": carol])
                expectError(added, 503, "unavailable")
                replica.resume()

                // Nothing else is posted: the message comes live once the replica holds it.
                let message = try await bobSocket.waitFor("the message held late", timeout: .seconds(15)) {
                    $0["channel_id"].string == id && $0["client_msg_id"].string == "late"
                }
                let joined = try #require(message["seq"].int) + 1
                let carolsJoin = try await carolSocket.waitFor("carol's own member_joined", timeout: .seconds(15)) {
                    $0["channel_id"].string == id && $0["seq"].int == joined
                }
                #expect(carolsJoin["type"].string == "member_joined" && carolsJoin["user_id"].string == carol, "\(carolsJoin)")
                let listed = try await relay.request("GET", "/channels", token: relay.token(carol))
                #expect(listed.value["channels"].array?.contains { $0["id"].string == id } == true, "\(listed)")
                let after = try #require(try await relay.send(alice, id, "after")["seq"].int)
                try await carolSocket.waitUntil("the next message") { _ in carolSocket.seqs(id).contains(after) }
                expectSeqs(carolSocket.seqs(id), [joined, after], "carol from her own member_joined")
            }
        }
    }

    /// An event written while its replica does not answer (503) is not read from the log either
    /// until the replica holds it: not by history, a channel's `last_seq`, a resume, nor taken as
    /// seen by a socket opened meanwhile. A failover could still lose it, and the promoted
    /// replica would give its seq to the next event, which such a reader would then never get.
    /// Once the replica holds it, it comes live to every socket, history has it, and the
    /// channel's next event follows it.
    @Test func anEventNoReplicaHoldsYetIsNotReadFromTheLog() async throws {
        let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
        try await Self.withWaitingRelay(timeout: .milliseconds(500)) { relay, replica, primary in
            let id = try await relay.createGroup(alice, members: [bob])
            let first = try #require(try await relay.send(alice, id, "first")["seq"].int)
            try await withSockets { sockets in
                let before = try await TestSocket.connect(relay, token: relay.token(bob), label: "opened before")
                sockets.append(before)

                replica.pause()
                try await relay.sendUnavailable(alice, id, "no replica holds this yet", clientMessageID: "unheld")
                #expect(try await redisCLI(["GET", "ch:{\(id)}:seq"], port: primary.port) == ["\(first + 1)"], "the primary logged it")

                #expect(seqs(try await relay.allEvents(bob, id)).last == first, "history")
                #expect(try await relay.lastSeq(bob, id) == first, "GET /channels/{id}")
                #expect(try await relay.listEntry(bob, id)?["last_seq"].int == first, "GET /channels")
                let start = before.frames.count
                _ = try await before.request(["type": "resume", "cursors": [id: first - 1]]) { $0["type"].string == "resumed" }
                let replayed = before.frames[start...].filter { $0["channel_id"].string == id }.compactMap { $0["seq"].int }
                #expect(replayed == [first], "the resume replays up to what the replica holds")
                let opened = try await TestSocket.connect(relay, token: relay.token(bob), label: "opened meanwhile")
                sockets.append(opened)

                replica.resume()
                for socket in sockets {
                    let event = try await socket.waitFor("the event, once held", timeout: .seconds(15)) {
                        $0["channel_id"].string == id && $0["seq"].int == first + 1
                    }
                    #expect(event["client_msg_id"].string == "unheld", "\(socket.label): \(event)")
                }
                #expect(seqs(try await relay.allEvents(bob, id)).last == first + 1, "history, once held")
                let next = try #require(try await relay.send(alice, id, "next")["seq"].int)
                #expect(next == first + 2)
                for socket in sockets {
                    try await socket.waitUntil("the next message") { _ in socket.seqs(id).contains(next) }
                }
                expectSeqs(opened.seqs(id), [first + 1, next], "the socket opened meanwhile")
            }
        }
    }

    /// In a fleet where some relays wait for replicas and one does not, the events of the one
    /// that does not are read by the others as they are published: history, `last_seq`, a new
    /// socket's start and its gap fill do not stop at the last event written through a waiting
    /// relay.
    @Test func eventsOfARelayThatDoesNotWaitAreReadByOnesThatDo() async throws {
        let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
        try await Self.withWaitingRelay(timeout: .seconds(5)) { waiting, _, primary in
            try await withRelay(redisURL: primary.url) { plain in
                let id = try await waiting.createGroup(alice, members: [bob])
                let held = try #require(try await waiting.send(alice, id, "through the waiting relay")["seq"].int)
                var sent: [Int] = []
                for index in 0..<3 {
                    sent.append(try #require(try await plain.send(alice, id, "through the other \(index)")["seq"].int))
                }
                #expect(seqs(try await waiting.allEvents(bob, id)).suffix(4) == [held] + sent)
                #expect(try await waiting.lastSeq(bob, id) == sent.last)
                try await withSockets { sockets in
                    let socket = try await TestSocket.connect(waiting, token: waiting.token(bob))
                    sockets.append(socket)
                    let next = try #require(try await plain.send(alice, id, "after the hello")["seq"].int)
                    try await socket.waitUntil("the message sent after the hello") { _ in socket.seqs(id).contains(next) }
                    #expect(socket.seqs(id) == [next])
                }
            }
        }
    }

    /// With a replica, every kind of write is acknowledged and pushed live as without waiting:
    /// messages (and a retry of one), edits, deletes, members added and removed, read cursors.
    @Test func writesReplicasHoldArePushedLive() async throws {
        let (alice, bob, carol) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"), TestRedis.uniqueName("carol"))
        try await Self.withWaitingRelay(timeout: .seconds(5)) { relay, replica, _ in
            let id = try await relay.createGroup(alice, members: [bob])
            try await withSockets { sockets in
                let socket = try await TestSocket.connect(relay, token: relay.token(bob), label: "bob")
                let carolSocket = try await TestSocket.connect(relay, token: relay.token(carol), label: "carol")
                sockets += [socket, carolSocket]
                let message = try await relay.send(alice, id, "hello", clientMessageID: "m1")
                let seq = try #require(message["seq"].int)
                try await socket.waitUntil("the message, live") { _ in socket.seqs(id).contains(seq) }
                #expect(socket.events(id).last == message)

                let again = try await relay.request(
                    "POST",
                    "/channels/\(id)/messages",
                    token: relay.token(alice),
                    json: ["client_msg_id": "m1", "text": "hello"]
                )
                #expect(again.status == 200, "\(again)")
                #expect(again.value["message"] == message)

                let messageID = try #require(message["message_id"].string)
                let edit = try await relay.request(
                    "PATCH",
                    "/channels/\(id)/messages/\(messageID)",
                    token: relay.token(alice),
                    json: ["text": "hello again"]
                )
                #expect(edit.status == 200, "\(edit)")
                let delete = try await relay.request("DELETE", "/channels/\(id)/messages/\(messageID)", token: relay.token(alice))
                #expect(delete.status == 200, "\(delete)")
                let added = try await relay.request("POST", "/channels/\(id)/members", token: relay.token(alice), json: ["user_id": carol])
                #expect(added.status == 200, "\(added)")
                let removed = try await relay.request("DELETE", "/channels/\(id)/members/\(carol)", token: relay.token(alice))
                #expect(removed.status == 200, "\(removed)")

                try await socket.waitUntil("every event, live") { _ in socket.seqs(id).last == seq + 4 }
                #expect(socket.events(id).suffix(4).map { $0["type"].string } == ["edit", "delete", "member_joined", "member_left"])
                expectSeqs(socket.seqs(id), Array(seq...(seq + 4)), "bob's socket")
                // Carol's socket follows the channel from her member_joined to her member_left.
                try await carolSocket.waitUntil("carol's own member_left") { _ in carolSocket.seqs(id).last == seq + 4 }
                #expect(carolSocket.seqs(id) == [seq + 3, seq + 4])
                // A read cursor, the one write that logs no event.
                let read = try await relay.request("POST", "/channels/\(id)/read", token: relay.token(bob), json: ["seq": seq + 4])
                #expect(read.status == 200 && read.value["last_read_seq"].int == seq + 4, "\(read)")
                // Over the socket (run in a task when the relay waits for replicas), on the same
                // cursor: it does not move back.
                let readOK = try await socket.request(["type": "read", "channel_id": id, "seq": seq + 1]) {
                    ["read_ok", "error"].contains($0["type"].string ?? "")
                }
                #expect(readOK["type"].string == "read_ok" && readOK["last_read_seq"].int == seq + 4, "\(readOK)")
                // The replica holds all of it.
                let replicated = try await redisCLI(["XLEN", "ch:{\(id)}:log"], port: replica.port)
                #expect(replicated == ["\(seq + 4)"])
            }
        }
    }
}
