import Foundation
import TestSupport
import Testing

@Suite("Read cursors and presence", .timeLimit(.minutes(3)))
struct ReadCursorAndPresenceTests {
    @Test func readCursorMovesForwardOnly() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            for index in 0..<4 { try await relay.send(bob, id, "m\(index)") }  // last_seq 6
            let path = "/channels/\(id)/read"

            let first = try await relay.request("POST", path, token: relay.token(alice), json: ["seq": 4])
            #expect(first.status == 200, "\(first)")
            #expect(first.value == .object(["last_read_seq": .int(4)]), "\(first)")

            let back = try await relay.request("POST", path, token: relay.token(alice), json: ["seq": 2])
            #expect(back.status == 200, "\(back)")
            #expect(back.value["last_read_seq"].int == 4, "never moves back: \(back)")

            let same = try await relay.request("POST", path, token: relay.token(alice), json: ["seq": 4])
            #expect(same.value["last_read_seq"].int == 4, "\(same)")

            let top = try await relay.request("POST", path, token: relay.token(alice), json: ["seq": 6])
            #expect(top.value["last_read_seq"].int == 6, "\(top)")

            let entry = try await relay.listEntry(alice, id)
            #expect(entry["last_seq"].int == 6)
            #expect(entry["last_read_seq"].int == 6)
            #expect(entry["unread"].int == 0)
        }
    }

    @Test func readAboveLastSeqIsBadRequestAndChangesNothing() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            try await relay.send(alice, id, "m")  // last_seq 2
            let path = "/channels/\(id)/read"
            #expect(try await relay.request("POST", path, token: relay.token(alice), json: ["seq": 1]).value["last_read_seq"].int == 1)
            expectError(try await relay.request("POST", path, token: relay.token(alice), json: ["seq": 3]), 400, "bad_request")
            expectError(try await relay.request("POST", path, token: relay.token(alice), json: ["seq": 1_000_000]), 400, "bad_request")
            let entry = try await relay.listEntry(alice, id)
            #expect(entry["last_read_seq"].int == 1)
            #expect(entry["unread"].int == 1)
        }
    }

    @Test func readRefusesBadBodiesNonMembersAndUnknownChannels() async throws {
        try await withRelay { relay in
            let (alice, mallory) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("mallory"))
            let id = try await relay.createGroup(alice)
            let path = "/channels/\(id)/read"
            let bodies: [Any] = [[String: Any](), ["seq": "1"], ["seq": 1.5], ["seq": NSNull()], ["seq": -1], ["seq": [1]], 1]
            for body in bodies {
                let response = try await relay.request("POST", path, token: relay.token(alice), json: body)
                #expect(response.status == 400, "body \(body): \(response)")
                #expect(response.errorCode == "bad_request", "body \(body): \(response)")
            }
            expectError(
                try await relay.request("POST", path, token: relay.token(alice), rawBody: Array("{\"seq\":".utf8)),
                400,
                "bad_request"
            )
            // A seq is read as a WebSocket `read` reads it: a whole number as JSON writes one.
            for raw in [#"{"seq":1.0}"#, #"{"seq":1e0}"#, #"{"seq":99999999999999999999}"#] {
                let response = try await relay.request("POST", path, token: relay.token(alice), rawBody: Array(raw.utf8))
                expectError(response, 400, "bad_request")
                #expect(response.errorMessage?.contains("seq") == true, "\(raw): \(response)")
            }
            expectError(try await relay.request("POST", path, token: relay.token(mallory), json: ["seq": 1]), 403, "forbidden")
            expectError(
                try await relay.request(
                    "POST",
                    "/channels/\(TestRedis.uniqueName("none"))/read",
                    token: relay.token(alice),
                    json: ["seq": 1]
                ),
                404,
                "not_found"
            )
            #expect(try await relay.listEntry(alice, id)["last_read_seq"].int == 0)
        }
    }

    @Test func eachSessionOfAUserHasItsOwnCursor() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            for index in 0..<8 { try await relay.send(bob, id, "m\(index)") }  // last_seq 10
            let path = "/channels/\(id)/read"

            let laptop = try await relay.request("POST", path, token: relay.token(alice, session: "laptop"), json: ["seq": 7])
            #expect(laptop.value["last_read_seq"].int == 7, "\(laptop)")
            // The phone starts at 0 and moves on its own, below the laptop's cursor.
            let phoneEntry = try await relay.listEntry(alice, session: "phone", id)
            #expect(phoneEntry["last_read_seq"].int == 0)
            #expect(phoneEntry["unread"].int == 10)
            let phone = try await relay.request("POST", path, token: relay.token(alice, session: "phone"), json: ["seq": 3])
            #expect(phone.value["last_read_seq"].int == 3, "\(phone)")

            let laptopEntry = try await relay.listEntry(alice, session: "laptop", id)
            #expect(laptopEntry["last_read_seq"].int == 7)
            #expect(laptopEntry["unread"].int == 3)
            let phoneAfter = try await relay.listEntry(alice, session: "phone", id)
            #expect(phoneAfter["last_read_seq"].int == 3)
            #expect(phoneAfter["unread"].int == 7)
            // The token without `sid` is the "default" session, a third cursor.
            #expect(try await relay.listEntry(alice, session: "default", id)["last_read_seq"].int == 0)
            let noSID = ForgedToken.make(
                header: #"{"alg":"HS256","typ":"JWT"}"#,
                payload: #"{"sub":"\#(alice)","exp":\#(unixNow() + 3600)}"#,
                secret: relay.secret
            )
            let list = try await relay.request("GET", "/channels", token: noSID)
            #expect(list.value["channels"].array?.first["last_read_seq"].int == 0, "\(list)")
            // Another user's cursor is untouched.
            #expect(try await relay.listEntry(bob, id)["unread"].int == 10)
        }
    }

    @Test func unreadFollowsNewEvents() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            #expect(try await relay.request("POST", "/channels/\(id)/read", token: relay.token(alice), json: ["seq": 2]).status == 200)
            #expect(try await relay.listEntry(alice, id)["unread"].int == 0)
            try await relay.send(bob, id, "one")
            try await relay.send(bob, id, "two")
            let entry = try await relay.listEntry(alice, id)
            #expect(entry["last_seq"].int == 4)
            #expect(entry["last_read_seq"].int == 2)
            #expect(entry["unread"].int == 2)
        }
    }

    @Test func presenceOfUsersWithoutWebSocketsIsOffline() async throws {
        try await withRelay { relay in
            let (alice, bob, carol) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"), TestRedis.uniqueName("carol"))
            let response = try await relay.request("GET", "/presence?user_ids=\(bob),\(carol)", token: relay.token(alice))
            #expect(response.status == 200, "\(response)")
            #expect(response.value == .object(["presence": .object([bob: "offline", carol: "offline"])]), "\(response)")
            // REST requests do not make a user online.
            let own = try await relay.request("GET", "/presence?user_ids=\(alice)", token: relay.token(alice))
            #expect(own.value == .object(["presence": .object([alice: "offline"])]), "\(own)")
        }
    }

    @Test(arguments: [
        "", "?", "?user_ids=", "?user_ids=alice,bad%20user", "?user_ids=alice,,bob", "?user_ids=%F0%9F%98%80", "?users=alice",
    ])
    func presenceRefusesBadQueries(_ query: String) async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            expectError(try await relay.request("GET", "/presence\(query)", token: relay.token(alice)), 400, "bad_request")
        }
    }

    @Test func presenceRefusesAnIDOf65Characters() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let long = String(repeating: "p", count: 65)
            expectError(
                try await relay.request("GET", "/presence?user_ids=\(alice),\(long)", token: relay.token(alice)),
                400,
                "bad_request"
            )
            let longest = String(repeating: "p", count: 64)
            let fine = try await relay.request("GET", "/presence?user_ids=\(longest)", token: relay.token(alice))
            #expect(fine.value["presence"][longest].string == "offline", "\(fine)")
        }
    }
}
