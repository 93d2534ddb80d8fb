import Foundation
import Relay
import TestSupport
import Testing

/// `GET /ws` (contract section 5), through real sockets against an in-process relay.
@Suite("WebSocket", .timeLimit(.minutes(2)))
struct WebSocketTests {
    // MARK: - hello

    @Test func helloNamesTheTokensUserAndSession() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let socket = try await TestSocket.connect(relay, token: relay.token(alice, session: "laptop"))
            defer { socket.abort() }
            let hello = try #require(socket.frames.first)
            #expect(hello["type"].string == "hello", "\(hello)")
            #expect(hello["user_id"].string == alice, "\(hello)")
            #expect(hello["session_id"].string == "laptop", "\(hello)")
            #expect(hello["connection_id"].string.map { !$0.isEmpty } == true, "\(hello)")
            #expect(hello["heartbeat_ms"].int == 30_000, "\(hello)")

            // Default session, token in the Authorization header.
            let second = try await TestSocket.connect(relay, token: relay.token(alice), viaHeader: true)
            defer { second.abort() }
            let hello2 = try #require(second.frames.first)
            #expect(hello2["type"].string == "hello", "\(hello2)")
            #expect(hello2["user_id"].string == alice, "\(hello2)")
            #expect(hello2["session_id"].string == "default", "\(hello2)")
            #expect(hello2["connection_id"] != hello["connection_id"], "connection ids must differ")
            await socket.close()
            await second.close()
        }
    }

    @Test func heartbeatMsFollowsTheConfiguration() async throws {
        let configure: (inout RelayConfiguration) -> Void = { $0.heartbeat = .seconds(2) }
        try await withRelay(configure) { relay in
            let socket = try await TestSocket.connect(relay, token: relay.token(TestRedis.uniqueName("u")))
            defer { socket.abort() }
            #expect(socket.frames.first["heartbeat_ms"].int == 2000, "\(socket.frames)")
            await socket.close()
        }
    }

    // MARK: - live delivery

    @Test func liveEventsReachMembersOnly() async throws {
        try await withRelay { relay in
            let (alice, bob, carol) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"), TestRedis.uniqueName("carol"))
            let id = try await relay.createGroup(alice, members: [bob])
            let bobSocket = try await TestSocket.connect(relay, token: relay.token(bob), label: "bob")
            defer { bobSocket.abort() }
            let carolSocket = try await TestSocket.connect(relay, token: relay.token(carol), label: "carol")
            defer { carolSocket.abort() }

            let event = try await relay.send(alice, id, "hello bob")
            let seq = try #require(event["seq"].int)
            let received = try await bobSocket.waitFor("the message") { $0["channel_id"].string == id && $0["seq"].int == seq }
            #expect(received == event, "the socket's event must be REST's message")

            // A ping round trip after bob got it: carol's socket saw nothing of the channel.
            try await carolSocket.ping()
            #expect(carolSocket.events(id).isEmpty, "a non-member received \(carolSocket.events(id))")
            #expect(!carolSocket.frames.contains { $0["channel_id"].string == id })
            await bobSocket.close()
            await carolSocket.close()
        }
    }

    @Test func editsAndDeletesArriveLiveToo() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            let socket = try await TestSocket.connect(relay, token: relay.token(bob))
            defer { socket.abort() }
            let message = try await relay.send(alice, id, "v1")
            let messageID = try #require(message["message_id"].string)
            let edit = try await relay.request(
                "PATCH",
                "/channels/\(id)/messages/\(messageID)",
                token: relay.token(alice),
                json: ["text": "v2"]
            )
            try #require(edit.status == 200, "\(edit)")
            let delete = try await relay.request("DELETE", "/channels/\(id)/messages/\(messageID)", token: relay.token(alice))
            try #require(delete.status == 200, "\(delete)")
            let deleteSeq = try #require(delete.value["message"]["seq"].int)
            _ = try await socket.waitFor("the delete") { $0["seq"].int == deleteSeq && $0["channel_id"].string == id }
            let events = socket.events(id)
            #expect(events.map { $0["type"].string ?? "" }.suffix(3) == ["message", "edit", "delete"], "\(events)")
            #expect(events.last == delete.value["message"])
            #expect(events.dropLast().last == edit.value["message"])
            await socket.close()
        }
    }

    // MARK: - joining while connected

    @Test func joiningWhileConnectedDeliversOwnMemberJoinedThenMessages() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let socket = try await TestSocket.connect(relay, token: relay.token(bob))
            defer { socket.abort() }

            // Created with bob as a member.
            let created = try await relay.createGroup(alice, members: [bob])
            let joined = try await socket.waitFor("bob's member_joined in the new group") {
                $0["channel_id"].string == created && $0["type"].string == "member_joined" && $0["user_id"].string == bob
            }
            #expect(joined["sender_id"].string == alice, "\(joined)")
            let first = try await relay.send(alice, created, "welcome")
            let got = try await socket.waitFor("the message after joining") {
                $0["channel_id"].string == created && $0["seq"] == first["seq"]
            }
            #expect(got == first)

            // Added to an existing group.
            let later = try await relay.createGroup(alice)
            try await relay.send(alice, later, "before bob")
            let add = try await relay.request("POST", "/channels/\(later)/members", token: relay.token(alice), json: ["user_id": bob])
            try #require(add.status == 200, "\(add)")
            _ = try await socket.waitFor("bob's member_joined after being added") {
                $0["channel_id"].string == later && $0["type"].string == "member_joined" && $0["user_id"].string == bob
            }
            let next = try await relay.send(alice, later, "now with bob")
            let nextSeq = try #require(next["seq"].int)
            _ = try await socket.waitFor("the message after being added") { $0["channel_id"].string == later && $0["seq"].int == nextSeq }
            let seqs = socket.seqs(later)
            #expect(seqs == seqs.sorted() && Set(seqs).count == seqs.count, "strictly increasing: \(seqs)")
            #expect(seqs.last == nextSeq)
            await socket.close()
        }
    }

    @Test func leavingStopsDelivery() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            let socket = try await TestSocket.connect(relay, token: relay.token(bob))
            defer { socket.abort() }
            let remove = try await relay.request("DELETE", "/channels/\(id)/members/\(bob)", token: relay.token(alice))
            try #require(remove.status == 200, "\(remove)")
            _ = try await socket.waitFor("bob's member_left") { $0["channel_id"].string == id && $0["type"].string == "member_left" }
            let after = try await relay.send(alice, id, "bob is gone")
            try await socket.ping()
            try await Task.sleep(for: .milliseconds(300))
            try await socket.ping()
            #expect(!socket.events(id).contains { $0["seq"] == after["seq"] }, "a removed member still receives the channel")
            await socket.close()
        }
    }

    // MARK: - send, read, ping

    @Test func sendFrameIsAckedIdempotentlyAndRefusedToNonMembers() async throws {
        try await withRelay { relay in
            let (alice, bob, mallory) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"), TestRedis.uniqueName("mallory"))
            let id = try await relay.createGroup(alice, members: [bob])
            let socket = try await TestSocket.connect(relay, token: relay.token(alice))
            defer { socket.abort() }
            let frame: [String: Any] = ["type": "send", "channel_id": id, "client_msg_id": "c-1", "text": "over the socket"]
            let ack = try await socket.request(frame) {
                $0["client_msg_id"].string == "c-1" && ["ack", "error"].contains($0["type"].string ?? "")
            }
            #expect(ack["type"].string == "ack", "\(ack)")
            #expect(ack["channel_id"].string == id, "\(ack)")
            let seq = try #require(ack["seq"].int, "\(ack)")
            let messageID = try #require(ack["message_id"].string, "\(ack)")

            let again = try await socket.request(frame) {
                $0["client_msg_id"].string == "c-1" && ["ack", "error"].contains($0["type"].string ?? "")
            }
            #expect(again["type"].string == "ack", "\(again)")
            #expect(again["seq"].int == seq, "same client_msg_id → same seq: \(again)")
            #expect(again["message_id"].string == messageID)
            #expect(try await relay.lastSeq(alice, id) == seq, "the repeat logged something new")

            // The message itself, as REST stores it, and live to another member.
            let history = try await relay.history(alice, id, "after=\(seq - 1)")
            #expect(history.events.first["message_id"].string == messageID)
            #expect(history.events.first["text"].string == "over the socket")
            #expect(history.events.first["sender_id"].string == alice)
            #expect(history.events.first["client_msg_id"].string == "c-1")

            let intruder = try await TestSocket.connect(relay, token: relay.token(mallory), label: "mallory")
            defer { intruder.abort() }
            let refused = try await intruder.request(["type": "send", "channel_id": id, "client_msg_id": "m-1", "text": "let me in"]) {
                $0["client_msg_id"].string == "m-1"
            }
            #expect(refused["type"].string == "error", "\(refused)")
            #expect(refused["code"].string == "forbidden", "\(refused)")
            #expect(refused["message"].string.map { !$0.isEmpty } == true, "\(refused)")
            #expect(try await relay.lastSeq(alice, id) == seq)
            try await intruder.ping()
            await socket.close()
            await intruder.close()
        }
    }

    /// A sender's own message may go out right after its ack, in the same write, rather than
    /// when its live copy arrives: whichever way, each socket gets every seq once, in order, and
    /// each ack names the seq its message arrived with.
    @Test func twoMembersSendingAtOnceEachGetEverySeqOnceInOrder() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            let first = try await relay.lastSeq(alice, id)
            let aliceSocket = try await TestSocket.connect(relay, token: relay.token(alice), label: "alice")
            let bobSocket = try await TestSocket.connect(relay, token: relay.token(bob), label: "bob")
            defer {
                aliceSocket.abort()
                bobSocket.abort()
            }
            let perSender = 60
            for index in 0..<perSender {
                for (socket, name) in [(aliceSocket, "a"), (bobSocket, "b")] {
                    try await socket.send(json: [
                        "type": "send", "channel_id": id, "client_msg_id": "\(name)-\(index)", "text": "\(name) \(index)",
                    ])
                }
            }
            let last = first + 2 * perSender
            for socket in [aliceSocket, bobSocket] {
                try await socket.waitUntil("every event and ack") { frames in
                    frames.filter { $0["type"].string == "ack" }.count == perSender
                        && frames.contains { $0["channel_id"].string == id && $0["seq"].int == last && $0["type"].string == "message" }
                }
            }
            for (socket, name) in [(aliceSocket, "a"), (bobSocket, "b")] {
                #expect(socket.seqs(id) == Array((first + 1)...last), "\(socket.label): \(socket.seqs(id))")
                let frames = socket.frames
                for index in 0..<perSender {
                    let ack = try #require(
                        frames.firstIndex { $0["type"].string == "ack" && $0["client_msg_id"].string == "\(name)-\(index)" }
                    )
                    let own = try #require(
                        frames.firstIndex { $0["type"].string == "message" && $0["client_msg_id"].string == "\(name)-\(index)" }
                    )
                    #expect(frames[ack]["seq"].int == frames[own]["seq"].int, "\(socket.label): \(name)-\(index)")
                }
            }
            #expect(try await relay.lastSeq(alice, id) == last)
            await aliceSocket.close()
            await bobSocket.close()
        }
    }

    @Test func readFrameAnswersReadOkAndPingAnswersPong() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            for index in 0..<3 { try await relay.send(alice, id, "m\(index)") }
            let last = try await relay.lastSeq(bob, id)
            let socket = try await TestSocket.connect(relay, token: relay.token(bob))
            defer { socket.abort() }
            try await socket.ping()

            let ok = try await socket.request(["type": "read", "channel_id": id, "seq": last - 1]) { $0["type"].string == "read_ok" }
            #expect(ok["channel_id"].string == id, "\(ok)")
            #expect(ok["last_read_seq"].int == last - 1, "\(ok)")
            let back = try await socket.request(["type": "read", "channel_id": id, "seq": 1]) { $0["type"].string == "read_ok" }
            #expect(back["last_read_seq"].int == last - 1, "never moves back: \(back)")
            #expect(try await relay.listEntry(bob, id)["last_read_seq"].int == last - 1)
            #expect(try await relay.listEntry(bob, id)["unread"].int == 1)

            let tooFar = try await socket.request(["type": "read", "channel_id": id, "seq": last + 100]) {
                ["read_ok", "error"].contains($0["type"].string ?? "")
            }
            #expect(tooFar["type"].string == "error", "a seq above last_seq: \(tooFar)")
            try await socket.ping()
            await socket.close()
        }
    }

    /// A group of alice's with bob in it and four messages: its id, alice, bob, and its last seq.
    func groupWithFourMessages(_ relay: RelayTestClient) async throws -> (id: String, alice: String, bob: String, last: Int) {
        let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
        let id = try await relay.createGroup(alice, members: [bob])
        for index in 0..<4 { try await relay.send(alice, id, "m\(index)") }
        return (id, alice, bob, try await relay.lastSeq(bob, id))
    }

    @Test func twoSessionsOfOneUserHaveSeparateReadCursors() async throws {
        try await withRelay { relay in
            let (id, _, bob, last) = try await self.groupWithFourMessages(relay)
            let phone = try await TestSocket.connect(relay, token: relay.token(bob, session: "phone"), label: "phone")
            defer { phone.abort() }
            let laptop = try await TestSocket.connect(relay, token: relay.token(bob, session: "laptop"), label: "laptop")
            defer { laptop.abort() }
            #expect(phone.frames.first["session_id"].string == "phone")
            #expect(laptop.frames.first["session_id"].string == "laptop")

            let phoneRead = try await phone.request(["type": "read", "channel_id": id, "seq": last]) { $0["type"].string == "read_ok" }
            #expect(phoneRead["last_read_seq"].int == last, "\(phoneRead)")
            let laptopRead = try await laptop.request(["type": "read", "channel_id": id, "seq": 2]) { $0["type"].string == "read_ok" }
            #expect(laptopRead["last_read_seq"].int == 2, "the laptop's cursor is its own: \(laptopRead)")

            #expect(try await relay.listEntry(bob, session: "phone", id)["last_read_seq"].int == last)
            #expect(try await relay.listEntry(bob, session: "laptop", id)["last_read_seq"].int == 2)
            #expect(try await relay.listEntry(bob, session: "laptop", id)["unread"].int == last - 2)
            #expect(try await relay.listEntry(bob, session: "other", id)["last_read_seq"].int == 0)
            await phone.close()
            await laptop.close()
        }
    }

    /// A read moves the session's cursor for every socket of that session (another tab): they
    /// get a `read_ok` of their own, unasked, as they do for a read over REST; the socket that
    /// asked gets its answer once, and other sessions nothing.
    @Test func aReadIsShownOnTheOtherSocketsOfItsSession() async throws {
        try await withRelay { relay in
            let (id, _, bob, last) = try await self.groupWithFourMessages(relay)
            let tab = try await TestSocket.connect(relay, token: relay.token(bob, session: "web"), label: "tab")
            defer { tab.abort() }
            let other = try await TestSocket.connect(relay, token: relay.token(bob, session: "web"), label: "other tab")
            defer { other.abort() }
            let phone = try await TestSocket.connect(relay, token: relay.token(bob, session: "phone"), label: "phone")
            defer { phone.abort() }

            let answer = try await tab.request(["type": "read", "channel_id": id, "seq": last - 1]) { $0["type"].string == "read_ok" }
            #expect(answer["last_read_seq"].int == last - 1)
            let shown = try await other.waitFor("the other tab's read_ok") { $0["type"].string == "read_ok" }
            #expect(shown["channel_id"].string == id && shown["last_read_seq"].int == last - 1, "\(shown)")

            let rest = try await relay.request("POST", "/channels/\(id)/read", token: relay.token(bob, session: "web"), json: ["seq": last])
            #expect(rest.status == 200, "\(rest)")
            for socket in [tab, other] {
                _ = try await socket.waitFor("read_ok of the REST read") {
                    $0["type"].string == "read_ok" && $0["last_read_seq"].int == last
                }
            }
            try await tab.ping()
            try await phone.ping()
            #expect(tab.frames.filter { $0["type"].string == "read_ok" }.count == 2, "its answer once, then the REST read")
            #expect(!phone.frames.contains { $0["type"].string == "read_ok" }, "another session's cursor did not move")
            await tab.close()
            await other.close()
            await phone.close()
        }
    }

    /// Notices of reads that raced may arrive out of order; a socket never shows its session's
    /// cursor going back, and a read that does not move it tells the other sockets nothing.
    @Test func aSocketNeverShowsTheReadCursorGoingBack() async throws {
        try await withRelay { relay in
            let (id, alice, bob, last) = try await self.groupWithFourMessages(relay)
            let tab = try await TestSocket.connect(relay, token: relay.token(bob, session: "web"), label: "tab")
            defer { tab.abort() }
            let other = try await TestSocket.connect(relay, token: relay.token(bob, session: "web"), label: "other tab")
            defer { other.abort() }
            let readOKs = { (socket: TestSocket) in
                socket.frames.filter { $0["type"].string == "read_ok" }.compactMap { $0["last_read_seq"].int }
            }

            var answer = try await tab.request(["type": "read", "channel_id": id, "seq": last]) { $0["type"].string == "read_ok" }
            #expect(answer["last_read_seq"].int == last)
            _ = try await other.waitFor("the other tab's read_ok") { $0["type"].string == "read_ok" }
            // A late notice of an older read, as a relay that lost the race would publish it.
            let cli = URL(fileURLWithPath: ProcessInfo.processInfo.environment["REDIS_SERVER_BIN"] ?? "/usr/bin/redis-server")
                .deletingLastPathComponent().appendingPathComponent("redis-cli").path
            let topic = "user:{\(bob)}:live"
            let published = try await ChildProcess.run(
                cli,
                ["-h", TestRedis.host, "-p", "\(TestRedis.port)", "SPUBLISH", topic, "read - web \(id) \(last - 2)"],
                environment: ProcessInfo.processInfo.environment
            )
            #expect(published.termination == .exited(0) && published.standardOutput.hasPrefix("1"), "\(published)")
            // A read below the cursor: answered with the cursor, and not shown elsewhere.
            answer = try await tab.request(["type": "read", "channel_id": id, "seq": last - 1]) { $0["type"].string == "read_ok" }
            #expect(answer["last_read_seq"].int == last)
            try await relay.send(alice, id, "one more")
            answer = try await tab.request(["type": "read", "channel_id": id, "seq": last + 1]) { $0["type"].string == "read_ok" }
            #expect(answer["last_read_seq"].int == last + 1)
            _ = try await other.waitFor("the read of the new message") {
                $0["type"].string == "read_ok" && $0["last_read_seq"].int == last + 1
            }
            try await tab.ping()
            #expect(readOKs(other) == [last, last + 1], "never back, nothing for a read that did not move")
            #expect(readOKs(tab) == [last, last, last + 1], "its own answers")
            await tab.close()
            await other.close()
        }
    }

    // MARK: - resume

    @Test func resumeWithALowerCursorReplaysFromThatCursor() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            let socket = try await TestSocket.connect(relay, token: relay.token(bob))
            defer { socket.abort() }
            for index in 0..<5 { try await relay.send(alice, id, "m\(index)") }
            let top = try await relay.lastSeq(alice, id)
            try await socket.waitUntil("all 5 live") { frames in frames.contains { $0["seq"].int == top && $0["channel_id"].string == id } }
            let start = socket.frames.count
            try await socket.send(json: ["type": "resume", "cursors": [id: top - 3]])
            _ = try await socket.waitFor("resumed", from: start) { $0["type"].string == "resumed" }
            let after = Array(socket.frames[start...]).filter { $0["channel_id"].string == id && $0["seq"].int != nil }
            #expect(after.map { $0["seq"].int ?? -1 } == [top - 2, top - 1, top], "replays from the cursor: \(after)")
            await socket.close()
        }
    }

    // MARK: - across relays

    /// A client may hold a cursor from an earlier channel of the same id (a DM after Redis was
    /// emptied): the relay resumes from the log's end rather than hold live events back.
    @Test func resumeWithACursorPastTheEndStillGoesLive() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            let top = try await relay.lastSeq(alice, id)
            let socket = try await TestSocket.connect(relay, token: relay.token(bob))
            defer { socket.abort() }
            _ = try await socket.request(["type": "resume", "cursors": [id: top + 40]]) { $0["type"].string == "resumed" }
            for index in 1...3 { _ = try await relay.send(alice, id, "after \(index)") }
            try await socket.waitUntil("three live events") { _ in socket.seqs(id).count == 3 }
            #expect(socket.seqs(id) == Array((top + 1)...(top + 3)))
            await socket.close()
        }
    }

    /// Each entry of a resume that cannot be served (not an id, not a seq, a channel the user is
    /// not in) is answered with an error naming its channel; the others are replayed, and
    /// `resumed` comes all the same, so that a client waiting for it is not left waiting.
    @Test func aResumeServesItsGoodEntriesAndAnswersEachBadOne() async throws {
        try await withRelay { relay in
            let (alice, mallory) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("mallory"))
            let id = try await relay.createGroup(alice)
            let closed = try await relay.createGroup(mallory)
            for index in 0..<3 { try await relay.send(alice, id, "m\(index)") }
            let top = try await relay.lastSeq(alice, id)
            let socket = try await TestSocket.connect(relay, token: relay.token(alice))
            defer { socket.abort() }
            let start = socket.frames.count
            try await socket.sendRaw(
                text: #"{"type":"resume","cursors":{"bad id!":0,"\#(id)":\#(top - 2),"neg":-1,"str":"3","frac":1.5,"\#(closed)":0}}"#
            )
            let resumed = try await socket.waitFor("resumed", from: start) { $0["type"].string == "resumed" }
            #expect(resumed["type"].string == "resumed")
            let frames = Array(socket.frames[start...])
            let errors = Dictionary(
                frames.filter { $0["type"].string == "error" }.map { ($0["channel_id"].string ?? "?", $0["code"].string ?? "?") },
                uniquingKeysWith: { first, _ in first }
            )
            #expect(
                errors == [
                    "bad id!": "bad_request", "neg": "bad_request", "str": "bad_request", "frac": "bad_request", closed: "forbidden",
                ],
                "\(frames)"
            )
            let replayed = frames.filter { $0["channel_id"].string == id && $0["seq"].int != nil }.compactMap { $0["seq"].int }
            #expect(replayed == [top - 1, top], "\(frames)")
            await socket.close()
        }
    }

    @Test func aMessageSentThroughOneRelayReachesASocketOnAnother() async throws {
        try await withRelay { relayA in
            try await withRelay({ $0.jwtSecret = relayA.secret }) { relayB in
                let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
                let id = try await relayA.createGroup(alice, members: [bob])
                let socket = try await TestSocket.connect(relayB, token: relayB.token(bob))
                defer { socket.abort() }
                let event = try await relayA.send(alice, id, "across relays")
                let got = try await socket.waitFor("the message on relay B") { $0["channel_id"].string == id && $0["seq"] == event["seq"] }
                #expect(got == event)

                // And a send frame on B reaches a socket on A.
                let aliceSocket = try await TestSocket.connect(relayA, token: relayA.token(alice))
                defer { aliceSocket.abort() }
                let ack = try await socket.request(["type": "send", "channel_id": id, "client_msg_id": "x", "text": "back"]) {
                    $0["type"].string == "ack"
                }
                _ = try await aliceSocket.waitFor("bob's message on relay A") { $0["channel_id"].string == id && $0["seq"] == ack["seq"] }
                await socket.close()
                await aliceSocket.close()
            }
        }
    }

    // MARK: - malformed frames, limits, tokens

    @Test func malformedFramesGetBadRequestAndTheSocketStaysOpen() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let socket = try await TestSocket.connect(relay, token: relay.token(alice))
            defer { socket.abort() }
            let isError: (JSON) -> Bool = { $0["type"].string == "error" }
            let cases: [String] = [
                "{not json",
                "[1,2,3]",
                "\"send\"",
                #"{"type":"no-such-type"}"#,
                #"{"no_type":1}"#,
                #"{"type":"send","channel_id":"\#(id)","text":"no client_msg_id"}"#,
                #"{"type":"send","channel_id":"\#(id)","client_msg_id":"c"}"#,
                #"{"type":"read","channel_id":"\#(id)"}"#,
                #"{"type":"read","channel_id":"\#(id)","seq":"1"}"#,
                #"{"type":"resume"}"#,
                #"{"type":"resume","cursors":[1]}"#,
                // Ids that are not ids must come back as valid JSON in the error, not spliced raw.
                #"{"type":"read","channel_id":"a\"}b","seq":1}"#,
                #"{"type":"send","channel_id":"x\"y","client_msg_id":"c","text":"t"}"#,
            ]
            for text in cases {
                let start = socket.frames.count
                try await socket.sendRaw(text: text)
                let error = try await socket.waitFor("an error for \(text)", from: start, isError)
                #expect(error["code"].string == "bad_request", "\(text) → \(error)")
                try await socket.ping()
            }
            // The error names what is wrong, as REST does, and carries the send's ids.
            let named: [(String, String, String?)] = [
                (#"{"type":"send","channel_id":"\#(id)","text":"t"}"#, "missing field client_msg_id", id),
                (#"{"type":"send","channel_id":"\#(id)","client_msg_id":"c","text":5}"#, "wrong type for text: a string", id),
                (#"{"type":"send","channel_id":"\#(id)","client_msg_id":"c","text":""}"#, "text must not be empty", id),
                (#"{"type":"read","channel_id":"\#(id)","seq":-1}"#, "seq must be a whole number, 0 or more", id),
                (#"{"type":"read","seq":1}"#, "missing field channel_id", nil),
            ]
            for (text, message, channel) in named {
                let start = socket.frames.count
                try await socket.sendRaw(text: text)
                let error = try await socket.waitFor("an error for \(text)", from: start, isError)
                #expect(error["message"].string == message && error["channel_id"].string == channel, "\(text) → \(error)")
            }
            let other = try await relay.createGroup(TestRedis.uniqueName("bob"))
            let refused = socket.frames.count
            try await socket.send(json: ["type": "send", "channel_id": other, "client_msg_id": "x", "text": "t"])
            let forbidden = try await socket.waitFor("forbidden", from: refused, isError)
            #expect(forbidden["code"].string == "forbidden" && forbidden["channel_id"].string == other, "\(forbidden)")

            let start = socket.frames.count
            try await socket.sendBinary(Array(#"{"type":"ping"}"#.utf8))
            let binaryError = try await socket.waitFor("an error for a binary frame", from: start, isError)
            #expect(binaryError["code"].string == "bad_request", "\(binaryError)")
            try await socket.ping()
            #expect(!socket.isClosed)
            await socket.close()
        }
    }

    @Test func aFrameOver64KiBClosesWith1009() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let socket = try await TestSocket.connect(relay, token: relay.token(alice))
            defer { socket.abort() }
            // A frame just under the limit is fine (its text is too long: an error, not a close).
            let justUnder = #"{"type":"send","channel_id":"\#(id)","client_msg_id":"u","text":""#
            let padding = 64 * 1024 - justUnder.utf8.count - 2 - 16
            try await socket.sendRaw(text: justUnder + String(repeating: "a", count: padding) + "\"}")
            try await socket.ping()
            #expect(!socket.isClosed)

            let big =
                #"{"type":"send","channel_id":"\#(id)","client_msg_id":"big","text":""# + String(repeating: "a", count: 64 * 1024) + "\"}"
            try await socket.sendRaw(text: big)
            let code = try await socket.waitForClose(timeout: .seconds(10))
            #expect(code == 1009, "close code \(String(describing: code))")
        }
    }

    @Test(arguments: ["none", "expired", "wrong secret", "garbage", "given twice"])
    func aBadTokenUpgradesThenClosesWith4001(kind: String) async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let token: String? =
                switch kind {
                case "none": nil
                case "expired": relay.token(alice, ttl: -60)
                case "wrong secret": RelayTestClient(port: relay.port, secret: randomBytes(32)).token(alice)
                // `?token=<valid>&token=<valid>`: which one counts would be a guess.
                case "given twice": "\(relay.token(alice))&token=\(relay.token(alice))"
                default: "not.a.jwt"
                }
            // A raw socket: the close frame and the end of the connection are read byte for byte.
            let socket = try await StalledSocket.open(port: relay.port, token: token, receiveBuffer: 65_536)
            let (bytes, ended) = try await socket.drain(timeout: .seconds(10))
            let frames = StalledSocket.frames(in: bytes)
            #expect(
                StalledSocket.closeCode(in: bytes) == 4001,
                "\(kind): frames \(frames.map { ($0.opcode, String(decoding: $0.payload, as: UTF8.self)) })"
            )
            #expect(ended, "\(kind): the connection stayed open")
            // The reason says which, as REST's 401 does: a token to renew, or one signed wrong.
            let reason = frames.first { $0.opcode == 0x8 }.map { String(decoding: $0.payload.dropFirst(2), as: UTF8.self) } ?? ""
            let expected = ["none": "no token", "expired": "expired", "wrong secret": "signature", "given twice": "no token"][kind]
            if let expected { #expect(reason.contains(expected), "\(kind): \(reason)") }
            #expect(
                !frames.contains { $0.opcode == 0x1 && String(decoding: $0.payload, as: UTF8.self).contains("hello") },
                "\(kind): a hello for a bad token"
            )
        }
    }

    @Test func aBadTokenInTheHeaderClosesWith4001() async throws {
        try await withRelay { relay in
            let token = relay.token(TestRedis.uniqueName("alice"), ttl: -60)
            let socket = try await StalledSocket.open(port: relay.port, token: token, viaHeader: true, receiveBuffer: 65_536)
            let (bytes, ended) = try await socket.drain(timeout: .seconds(10))
            #expect(StalledSocket.closeCode(in: bytes) == 4001)
            #expect(ended)
        }
    }

    /// A frame that came before the client's close frame is answered before the close frame is
    /// echoed (frames are answered in the order they arrive), even sent in the same packet.
    @Test func aSendJustBeforeTheClientsCloseIsAckedFirst() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let socket = try await RawWebSocket.connect(port: relay.port, path: "/ws", query: "token=\(relay.token(alice))")
            guard case .frame(let hello) = try await socket.read(timeout: .seconds(10)), hello.jsonType == "hello" else {
                Issue.record("no hello")
                return
            }
            let send = #"{"type":"send","channel_id":"\#(id)","client_msg_id":"last","text":"bye"}"#
            try await socket.send(RawWebSocket.text(send) + RawWebSocket.close(code: 1000))
            var types: [String] = []
            var closeCode: UInt16?
            while closeCode == nil, types.count < 10 {
                guard case .frame(let frame) = try await socket.read(timeout: .seconds(10)) else { break }
                if let code = frame.closeCode { closeCode = code } else { types.append(frame.jsonType ?? "?") }
            }
            // The ack, and the message itself (live or with the ack, in either order), before the close.
            #expect(types.contains("ack"), "\(types)")
            #expect(closeCode == 1000)
            #expect(try await relay.lastSeq(alice, id) == 2)
        }
    }

    // MARK: - presence

    /// A client that goes away without a close frame (its process ended, and its kernel sent a
    /// FIN) is let go at once, with its socket, subscriptions and presence: not when a ping finds
    /// it silent two heartbeats later.
    @Test func aClientThatEndsItsSideOfTCPIsLetGoAtOnce() async throws {
        let configure: RelayConfigurator = { $0.heartbeat = .seconds(30) }
        try await withRelay(configure) { relay in
            let alice = TestRedis.uniqueName("alice")
            let socket = try await RawWebSocket.connect(port: relay.port, path: "/ws", query: "token=\(relay.token(alice))")
            let hello = try await socket.read(timeout: .seconds(10))
            guard case .frame(let frame) = hello, frame.jsonType == "hello" else {
                Issue.record("no hello: \(hello)")
                return
            }
            #expect(value(of: "relay_websockets", in: try await relay.request("GET", "/metrics").text) == 1)
            socket.shutdownWrite()
            // The relay closes its side too, well before a heartbeat could (30 s).
            let frames = try await socket.readToEnd(timeout: .seconds(10))
            #expect(!frames.contains { $0.opcode == 0x1 }, "\(frames)")
            try await waitUntil("the relay counts the socket gone", timeout: .seconds(10)) {
                value(of: "relay_websockets", in: try await relay.request("GET", "/metrics").text) == 0
            }
        }
    }

    @Test func presenceIsOnlineWhileConnectedAndLapsesAfter() async throws {
        // Two-second heartbeats: the key lives four seconds, so a refresh that a loaded machine
        // runs a second late does not let it lapse.
        let configure: (inout RelayConfiguration) -> Void = { $0.heartbeat = .seconds(2) }
        try await withRelay(configure) { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            func presence() async throws -> String? {
                let response = try await relay.request("GET", "/presence?user_ids=\(bob)", token: relay.token(alice))
                try #require(response.status == 200, "\(response)")
                return response.value["presence"][bob].string
            }
            #expect(try await presence() == "offline")
            let socket = try await TestSocket.connect(relay, token: relay.token(bob))
            defer { socket.abort() }
            try await waitUntil("bob is online", timeout: .seconds(5)) { try await presence() == "online" }
            // Stays online past the key's lifetime while the socket answers pings.
            try await Task.sleep(for: .seconds(5))
            #expect(try await presence() == "online")
            #expect(!socket.isClosed, "a socket answering pings was closed")
            await socket.close()
            try await waitUntil("bob is offline", timeout: .seconds(15)) { try await presence() == "offline" }

            // Two connections: closing one leaves bob online past the key's lifetime (two heartbeats).
            let phone = try await TestSocket.connect(relay, token: relay.token(bob, session: "phone"), label: "phone")
            defer { phone.abort() }
            let laptop = try await TestSocket.connect(relay, token: relay.token(bob, session: "laptop"), label: "laptop")
            defer { laptop.abort() }
            try await waitUntil("bob is online again", timeout: .seconds(5)) { try await presence() == "online" }
            await phone.close()
            try await Task.sleep(for: .seconds(5))
            #expect(try await presence() == "online", "the laptop still keeps bob online")
            await laptop.close()
            try await waitUntil("bob is offline again", timeout: .seconds(15)) { try await presence() == "offline" }
        }
    }
}
