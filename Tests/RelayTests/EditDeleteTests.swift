import Foundation
import TestSupport
import Testing

@Suite("Editing and deleting messages", .timeLimit(.minutes(3)))
struct EditDeleteTests {
    @Test func senderEditsAMessageAndTheEditIsLogged() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            let original = try await relay.send(alice, id, "helo")
            let messageID = try #require(original["message_id"].string)

            let response = try await relay.request(
                "PATCH",
                "/channels/\(id)/messages/\(messageID)",
                token: relay.token(alice),
                json: ["text": "hello ✏️"]
            )
            #expect(response.status == 200, "\(response)")
            #expect(response.value?.object?.keys.sorted() == ["message"], "\(response)")
            let edit = try #require(response.value["message"], "\(response)")
            #expect(edit["type"].string == "edit")
            #expect(edit["channel_id"].string == id)
            #expect(edit["seq"].int == 4)
            #expect(edit["message_id"].string == messageID, "the edited message's id")
            #expect(edit["sender_id"].string == alice)
            #expect(edit["text"].string == "hello ✏️")
            #expect(abs((edit["created_at"].int ?? 0) - unixMillisecondsNow()) < 60_000, "\(edit)")

            // A second edit is logged too.
            let second = try await relay.request(
                "PATCH",
                "/channels/\(id)/messages/\(messageID)",
                token: relay.token(alice),
                json: ["text": "hello!"]
            )
            #expect(second.status == 200, "\(second)")
            #expect(second.value["message"]["seq"].int == 5)

            let (events, _) = try await relay.history(bob, id)
            #expect(seqs(events) == [1, 2, 3, 4, 5])
            #expect(events[safe: 3] == edit)
            #expect(events[safe: 4]["text"].string == "hello!")
            #expect(events[safe: 4]["message_id"].string == messageID)
        }
    }

    @Test func onlyTheSenderMayEdit() async throws {
        try await withRelay { relay in
            let (alice, bob, mallory) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"), TestRedis.uniqueName("mallory"))
            let id = try await relay.createGroup(alice, members: [bob])
            let messageID = try #require(try await relay.send(alice, id, "mine")["message_id"].string)
            let path = "/channels/\(id)/messages/\(messageID)"
            expectError(try await relay.request("PATCH", path, token: relay.token(bob), json: ["text": "bob's now"]), 403, "forbidden")
            expectError(try await relay.request("PATCH", path, token: relay.token(mallory), json: ["text": "mallory's"]), 403, "forbidden")
            expectError(try await relay.request("DELETE", path, token: relay.token(bob)), 403, "forbidden")
            expectError(try await relay.request("DELETE", path, token: relay.token(mallory)), 403, "forbidden")
            #expect(try await relay.lastSeq(alice, id) == 3, "nothing was logged")
        }
    }

    @Test func unknownMessagesAndChannelsAreNotFound() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let other = try await relay.createGroup(alice)
            let elsewhere = try #require(try await relay.send(alice, other, "in the other channel")["message_id"].string)
            let unknownChannel = TestRedis.uniqueName("none")
            for path in [
                "/channels/\(id)/messages/no-such-message",
                "/channels/\(id)/messages/\(elsewhere)",  // a message of another channel
                "/channels/\(unknownChannel)/messages/\(elsewhere)",
            ] {
                expectError(try await relay.request("PATCH", path, token: relay.token(alice), json: ["text": "x"]), 404, "not_found")
                expectError(try await relay.request("DELETE", path, token: relay.token(alice)), 404, "not_found")
            }
            #expect(try await relay.lastSeq(alice, id) == 1)
            #expect(try await relay.lastSeq(alice, other) == 2)
        }
    }

    @Test func editRefusesBadBodies() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let messageID = try #require(try await relay.send(alice, id, "text")["message_id"].string)
            let path = "/channels/\(id)/messages/\(messageID)"
            let bodies: [Any] = [[String: Any](), ["text": 5], ["text": NSNull()], ["text": ["x"]], "text"]
            for body in bodies {
                let response = try await relay.request("PATCH", path, token: relay.token(alice), json: body)
                #expect(response.status == 400, "body \(body): \(response)")
                #expect(response.errorCode == "bad_request", "body \(body): \(response)")
            }
            expectError(
                try await relay.request("PATCH", path, token: relay.token(alice), rawBody: Array("{\"text\": ".utf8)),
                400,
                "bad_request"
            )
            expectOverLimit(
                try await relay.request(
                    "PATCH",
                    path,
                    token: relay.token(alice),
                    json: ["text": String(repeating: "x", count: 16 * 1024 + 1)]
                )
            )
            #expect(try await relay.lastSeq(alice, id) == 2, "nothing was logged")
        }
    }

    @Test func senderDeletesAMessageOnceAndTheDeleteIsLogged() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            let messageID = try #require(try await relay.send(bob, id, "oops")["message_id"].string)
            let path = "/channels/\(id)/messages/\(messageID)"

            let response = try await relay.request("DELETE", path, token: relay.token(bob))
            #expect(response.status == 200, "\(response)")
            #expect(response.value?.object?.keys.sorted() == ["message"], "\(response)")
            let delete = try #require(response.value["message"], "\(response)")
            #expect(delete["type"].string == "delete")
            #expect(delete["channel_id"].string == id)
            #expect(delete["seq"].int == 4)
            #expect(delete["message_id"].string == messageID)
            #expect(delete["sender_id"].string == bob)
            #expect(abs((delete["created_at"].int ?? 0) - unixMillisecondsNow()) < 60_000, "\(delete)")

            expectError(try await relay.request("DELETE", path, token: relay.token(bob)), 409, "conflict")
            expectError(try await relay.request("PATCH", path, token: relay.token(bob), json: ["text": "undo"]), 409, "conflict")
            #expect(try await relay.lastSeq(alice, id) == 4, "the refused delete and edit logged nothing")

            let (events, _) = try await relay.history(alice, id)
            #expect(events.last == delete)
        }
    }

    @Test func editThenDeleteThenEditIsAConflict() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let messageID = try #require(try await relay.send(alice, id, "v1")["message_id"].string)
            let path = "/channels/\(id)/messages/\(messageID)"
            #expect(try await relay.request("PATCH", path, token: relay.token(alice), json: ["text": "v2"]).status == 200)
            #expect(try await relay.request("DELETE", path, token: relay.token(alice)).status == 200)
            expectError(try await relay.request("PATCH", path, token: relay.token(alice), json: ["text": "v3"]), 409, "conflict")
            let (events, _) = try await relay.history(alice, id)
            #expect(events.map { $0["type"].string } == ["member_joined", "message", "edit", "delete"])
        }
    }

    @Test func concurrentDeletesOfOneMessageLogOneDelete() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let messageID = try #require(try await relay.send(alice, id, "going")["message_id"].string)
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<10 {
                    group.addTask {
                        try await relay.request("DELETE", "/channels/\(id)/messages/\(messageID)", token: relay.token(alice)).status
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == 200 }.count == 1, "\(statuses)")
            #expect(statuses.filter { $0 == 409 }.count == 9, "\(statuses)")
            #expect(try await relay.lastSeq(alice, id) == 3)
        }
    }
}
