import Foundation
import TestSupport
import Testing

/// Whether `id` is a relay id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
private func isRelayID(_ id: String) -> Bool {
    (1...64).contains(id.count)
        && id.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || ".-_".unicodeScalars.contains($0)) }
}

/// Expects `event` to be a `type` member event for `user`, made by `sender`.
private func expectMemberEvent(
    _ event: JSON?,
    _ type: String,
    channel: String,
    seq: Int,
    user: String,
    sender: String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(event["type"].string == type, "\(String(describing: event))", sourceLocation: sourceLocation)
    #expect(event["channel_id"].string == channel, "\(String(describing: event))", sourceLocation: sourceLocation)
    #expect(event["seq"].int == seq, "\(String(describing: event))", sourceLocation: sourceLocation)
    #expect(event["user_id"].string == user, "\(String(describing: event))", sourceLocation: sourceLocation)
    #expect(event["sender_id"].string == sender, "\(String(describing: event))", sourceLocation: sourceLocation)
    let createdAt = event["created_at"].int ?? 0
    #expect(abs(createdAt - unixMillisecondsNow()) < 60_000, "created_at \(createdAt)", sourceLocation: sourceLocation)
}

/// The channel object without its member order, which the contract leaves open.
private func normalized(_ channel: JSON?) -> JSON? {
    guard var object = channel?.object else { return channel }
    if let members = object["members"]?.array {
        object["members"] = .array(members.sorted { $0.description < $1.description })
    }
    return .object(object)
}

@Suite("Channels and members", .timeLimit(.minutes(3)))
struct ChannelTests {
    @Test func groupCreationReturnsTheBareChannelObject() async throws {
        try await withRelay { relay in
            let (alice, bob, carol) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"), TestRedis.uniqueName("carol"))
            let id = TestRedis.uniqueName("team")
            let response = try await relay.request(
                "POST",
                "/channels",
                token: relay.token(alice),
                json: ["type": "group", "members": [bob, carol], "name": "Team ✨", "id": id]
            )
            #expect(response.status == 201, "\(response)")
            let channel = try #require(response.value)
            #expect(channel["id"].string == id)
            #expect(channel["type"].string == "group")
            #expect(channel["name"].string == "Team ✨")
            #expect(Set(channel["members"].array?.compactMap(\.string) ?? []) == [alice, bob, carol], "\(channel)")
            #expect(channel["members"].array?.count == 3, "\(channel)")
            #expect(channel["member_count"].int == 3)
            #expect(channel["last_seq"].int == 3, "one member_joined per initial member: \(channel)")
            let createdAt = try #require(channel["created_at"].int, "\(channel)")
            #expect(abs(createdAt - unixMillisecondsNow()) < 60_000)
            #expect(channel["channel"] == nil && channel["error"] == nil, "the bare object, not wrapped: \(channel)")

            // GET /channels/{id} returns the same object, to any member.
            let fetched = try await relay.channel(bob, id)
            #expect(normalized(fetched) == normalized(channel))
        }
    }

    @Test func channelNamesRoundTripExactly() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let names = [
                #"quotes " and \ backslash \" and \u0041"#, "new\nline\ttab\u{01}\u{1F}", "emoji 👩‍👩‍👧 中文 \u{2028}", "nul \u{00} x",
                "</script>",
            ]
            for name in names {
                let id = try await relay.createGroup(alice, name: name)
                let channel = try await relay.channel(alice, id)
                #expect(
                    channel["name"].string?.unicodeScalars.elementsEqual(name.unicodeScalars) == true,
                    "\(name.debugDescription): \(channel)"
                )
                let entry = try await relay.listEntry(alice, id)
                #expect(
                    entry["name"].string?.unicodeScalars.elementsEqual(name.unicodeScalars) == true,
                    "\(name.debugDescription): \(String(describing: entry))"
                )
            }
        }
    }

    @Test func creationLogsOneMemberJoinedPerInitialMemberFromSeq1() async throws {
        try await withRelay { relay in
            let (alice, bob, carol) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"), TestRedis.uniqueName("carol"))
            let id = try await relay.createGroup(alice, members: [bob, carol])
            let (events, hasMore) = try await relay.history(alice, id)
            #expect(!hasMore)
            #expect(seqs(events) == [1, 2, 3])
            #expect(Set(events.compactMap { $0["user_id"].string }) == [alice, bob, carol])
            for (index, event) in events.enumerated() {
                expectMemberEvent(event, "member_joined", channel: id, seq: index + 1, user: event["user_id"].string ?? "?", sender: alice)
            }
        }
    }

    @Test func callerIsAlwaysAMember() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let withOthers = try await relay.createGroup(alice, members: [bob])
            let channel = try await relay.channel(alice, withOthers)
            #expect(Set(channel["members"].array?.compactMap(\.string) ?? []) == [alice, bob], "\(channel)")
            #expect(channel["member_count"].int == 2)

            let alone = try await relay.createGroup(alice, members: [])
            let aloneChannel = try await relay.channel(alice, alone)
            #expect(aloneChannel["members"].array?.compactMap(\.string) == [alice], "\(aloneChannel)")
            #expect(aloneChannel["member_count"].int == 1)
            #expect(aloneChannel["last_seq"].int == 1)

            // Listing yourself as well does not make you a member twice.
            let listed = try await relay.createGroup(alice, members: [alice, bob])
            #expect(try await relay.channel(alice, listed)["member_count"].int == 2)
            #expect(try await relay.lastSeq(alice, listed) == 2)
        }
    }

    @Test func serverMakesAnIDWhenNoneIsGiven() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let first = try await relay.createGroup(alice)
            let second = try await relay.createGroup(alice)
            #expect(first != second)
            #expect(isRelayID(first), "\(first)")
            #expect(isRelayID(second), "\(second)")
            #expect(try await relay.channel(alice, first)["id"].string == first)
        }
    }

    @Test func takenGroupIDIsAConflict() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, id: TestRedis.uniqueName("taken"), name: "first")
            for creator in [alice, bob] {
                let response = try await relay.request(
                    "POST",
                    "/channels",
                    token: relay.token(creator),
                    json: ["type": "group", "members": [], "id": id, "name": "second"]
                )
                expectError(response, 409, "conflict")
            }
            let channel = try await relay.channel(alice, id)
            #expect(channel["name"].string == "first")
            #expect(channel["members"].array?.compactMap(\.string) == [alice], "bob was not added by the refused create: \(channel)")
            #expect(channel["last_seq"].int == 1)
            expectError(try await relay.request("GET", "/channels/\(id)", token: relay.token(bob)), 403, "forbidden")
        }
    }

    @Test func concurrentCreatesOfOneIDMakeOneChannel() async throws {
        try await withRelay { relay in
            let id = TestRedis.uniqueName("race")
            let creators = (0..<8).map { TestRedis.uniqueName("u\($0)") }
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for creator in creators {
                    group.addTask {
                        try await relay.request(
                            "POST",
                            "/channels",
                            token: relay.token(creator),
                            json: ["type": "group", "members": [], "id": id]
                        ).status
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == 201 }.count == 1, "\(statuses)")
            #expect(statuses.filter { $0 == 409 }.count == creators.count - 1, "\(statuses)")
            var owners: [String] = []
            for creator in creators where try await relay.request("GET", "/channels/\(id)", token: relay.token(creator)).status == 200 {
                owners.append(creator)
            }
            #expect(owners.count == 1, "exactly the one creator who won is a member: \(owners)")
            let owner = try #require(owners.first)
            #expect(try await relay.channel(owner, id)["member_count"].int == 1)
            #expect(try await relay.lastSeq(owner, id) == 1)
        }
    }

    @Test func dmNeedsExactlyTwoDistinctMembers() async throws {
        try await withRelay { relay in
            let (alice, bob, carol) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"), TestRedis.uniqueName("carol"))
            for members in [[alice], [alice, alice], [alice, bob, carol], [bob, carol], []] {
                let response = try await relay.request(
                    "POST",
                    "/channels",
                    token: relay.token(alice),
                    json: ["type": "dm", "members": members]
                )
                #expect(response.status == 400, "members \(members): \(response)")
                #expect(response.errorCode == "bad_request", "members \(members): \(response)")
            }
            let listed = try await relay.request("GET", "/channels", token: relay.token(alice))
            #expect(listed.value["channels"].array == [], "nothing was created: \(listed)")
        }
    }

    @Test func dmIsIdempotentForThePairWhoeverCreatesItInEitherOrder() async throws {
        try await withRelay { relay in
            let (alice, bob, carol) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"), TestRedis.uniqueName("carol"))
            let first = try await relay.request(
                "POST",
                "/channels",
                token: relay.token(alice),
                json: ["type": "dm", "members": [alice, bob]]
            )
            #expect(first.status == 201, "\(first)")
            let id = try #require(first.value["id"].string, "\(first)")
            #expect(first.value["type"].string == "dm")
            #expect(first.value["member_count"].int == 2)
            #expect(Set(first.value["members"].array?.compactMap(\.string) ?? []) == [alice, bob])
            #expect(first.value["last_seq"].int == 2)

            for (creator, members) in [(alice, [alice, bob]), (alice, [bob, alice]), (bob, [bob, alice]), (bob, [alice, bob])] {
                let again = try await relay.request(
                    "POST",
                    "/channels",
                    token: relay.token(creator),
                    json: ["type": "dm", "members": members]
                )
                #expect(again.status == 200, "\(creator) \(members): \(again)")
                #expect(again.value["id"].string == id, "\(again)")
                #expect(again.value["type"].string == "dm", "\(again)")
                #expect(again.value["member_count"].int == 2, "\(again)")
            }
            // Nothing new was logged, and each user sees the DM once.
            let (events, _) = try await relay.history(bob, id)
            #expect(events.map { $0["type"].string } == ["member_joined", "member_joined"])
            #expect(Set(events.compactMap { $0["user_id"].string }) == [alice, bob])
            for user in [alice, bob] {
                let list = try await relay.request("GET", "/channels", token: relay.token(user))
                #expect(list.value["channels"].array?.filter { $0["id"].string == id }.count == 1, "\(list)")
            }

            let other = try await relay.request(
                "POST",
                "/channels",
                token: relay.token(alice),
                json: ["type": "dm", "members": [carol, alice]]
            )
            #expect(other.status == 201, "\(other)")
            #expect(other.value["id"].string != id)
            // A DM the caller is not in looks like no channel at all (nobody can probe who talks to whom).
            expectError(try await relay.request("GET", "/channels/\(id)", token: relay.token(carol)), 404, "not_found")
        }
    }

    @Test func concurrentDMCreatesOfOnePairMakeOneChannel() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let results = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
                for index in 0..<10 {
                    let (creator, members) = index.isMultiple(of: 2) ? (alice, [alice, bob]) : (bob, [alice, bob].reversed())
                    group.addTask {
                        let response = try await relay.request(
                            "POST",
                            "/channels",
                            token: relay.token(creator),
                            json: ["type": "dm", "members": members]
                        )
                        return (response.status, response.value["id"].string)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results.filter { $0.0 == 201 }.count == 1, "\(results)")
            #expect(results.filter { $0.0 == 200 }.count == 9, "\(results)")
            #expect(Set(results.compactMap(\.1)).count == 1, "\(results)")
            let id = try #require(results.first?.1)
            #expect(try await relay.lastSeq(alice, id) == 2)
        }
    }

    @Test func createRefusesBadBodies() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let bodies: [Any] = [
                [String: Any](),
                ["members": []],
                ["type": "channel", "members": []],
                ["type": 1, "members": []],
                ["type": "group", "members": "bob"],
                ["type": "group", "members": [1, 2]],
                ["type": "group", "members": ["bad user"]],
                ["type": "group", "members": [String(repeating: "b", count: 65)]],
                ["type": "group", "members": [""]],
                ["type": "group", "members": [], "id": "bad id"],
                ["type": "group", "members": [], "id": "bad/id"],
                ["type": "group", "members": [], "id": "."],
                ["type": "group", "members": [], "id": ".."],
                ["type": "group", "members": [".."]],
                ["type": "group", "members": [], "id": ""],
                ["type": "group", "members": [], "id": String(repeating: "c", count: 65)],
                ["type": "group", "members": [], "id": "caf\u{e9}"],
                ["type": "group", "members": [], "id": 7],
                ["type": "group", "members": [], "name": 7],
                ["type": "dm", "members": [alice, "bad user"]],
                [["type": "group", "members": []]],
                "group",
                NSNull(),
            ]
            for body in bodies {
                let response = try await relay.request("POST", "/channels", token: relay.token(alice), json: body)
                #expect(response.status == 400, "body \(body): \(response)")
                #expect(response.errorCode == "bad_request", "body \(body): \(response)")
            }
            for raw in ["", "{", "{\"type\": \"group\", \"members\": []", "type=group", "\u{feff}"] {
                let response = try await relay.request("POST", "/channels", token: relay.token(alice), rawBody: Array(raw.utf8))
                #expect(response.status == 400, "body \(raw.debugDescription): \(response)")
                #expect(response.errorCode == "bad_request", "body \(raw.debugDescription): \(response)")
            }
            let list = try await relay.request("GET", "/channels", token: relay.token(alice))
            #expect(list.value["channels"].array == [], "nothing was created: \(list)")
        }
    }

    @Test func listShowsTheCallersChannelsWithSeqAndUnread() async throws {
        try await withRelay { relay in
            let (alice, bob, carol) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"), TestRedis.uniqueName("carol"))
            let group = try await relay.createGroup(alice, members: [bob], name: "Team")
            let dmResponse = try await relay.request(
                "POST",
                "/channels",
                token: relay.token(alice),
                json: ["type": "dm", "members": [alice, carol]]
            )
            let dm = try #require(dmResponse.value["id"].string, "\(dmResponse)")
            let bobsOwn = try await relay.createGroup(bob)
            try await relay.send(bob, group, "one")
            try await relay.send(alice, group, "two")

            let response = try await relay.request("GET", "/channels", token: relay.token(alice))
            #expect(response.status == 200, "\(response)")
            let channels = try #require(response.value["channels"].array, "\(response)")
            #expect(Set(channels.compactMap { $0["id"].string }) == [group, dm], "\(response)")
            #expect(channels.count == 2)

            let groupEntry = try #require(channels.first { $0["id"].string == group })
            #expect(groupEntry["type"].string == "group")
            #expect(groupEntry["name"].string == "Team")
            #expect(groupEntry["member_count"].int == 2)
            #expect(groupEntry["last_seq"].int == 4)
            #expect(groupEntry["last_read_seq"].int == 0)
            #expect(groupEntry["unread"].int == 4)

            let dmEntry = try #require(channels.first { $0["id"].string == dm })
            #expect(dmEntry["type"].string == "dm")
            #expect(dmEntry["member_count"].int == 2)
            #expect(dmEntry["last_seq"].int == 2)
            #expect(dmEntry["last_read_seq"].int == 0)
            #expect(dmEntry["unread"].int == 2)

            let bobs = try await relay.request("GET", "/channels", token: relay.token(bob))
            #expect(Set(bobs.value["channels"].array?.compactMap { $0["id"].string } ?? []) == [group, bobsOwn], "\(bobs)")
            let fresh = try await relay.request("GET", "/channels", token: relay.token(TestRedis.uniqueName("nobody")))
            #expect(fresh.value == .object(["channels": .array([])]), "\(fresh)")
        }
    }

    @Test func getChannelIsForbiddenToNonMembersAndNotFoundWhenMissing() async throws {
        try await withRelay { relay in
            let (alice, mallory) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("mallory"))
            let id = try await relay.createGroup(alice)
            let forbidden = try await relay.request("GET", "/channels/\(id)", token: relay.token(mallory))
            expectError(forbidden, 403, "forbidden")
            #expect(forbidden.value["members"] == nil)
            expectError(
                try await relay.request("GET", "/channels/\(TestRedis.uniqueName("none"))", token: relay.token(alice)),
                404,
                "not_found"
            )
        }
    }

    @Test(arguments: [
        String(repeating: "c", count: 65), "bad%20id", "bad!id", "caf%C3%A9", "a%2Fb", "bad%00id", "%F0%9F%98%80", "a:b", "a@b",
    ])
    func channelIDOutsideTheCharsetIsBadRequestInEveryPath(_ id: String) async throws {
        try await withRelay { relay in
            let token = relay.token(TestRedis.uniqueName("alice"))
            let requests: [(String, String, [String: Any]?)] = [
                ("GET", "/channels/\(id)", nil),
                ("POST", "/channels/\(id)/members", ["user_id": "bob"]),
                ("DELETE", "/channels/\(id)/members/bob", nil),
                ("POST", "/channels/\(id)/messages", ["client_msg_id": "m1", "text": "hi"]),
                ("GET", "/channels/\(id)/messages", nil),
                ("PATCH", "/channels/\(id)/messages/m1", ["text": "hi"]),
                ("DELETE", "/channels/\(id)/messages/m1", nil),
                ("POST", "/channels/\(id)/read", ["seq": 1]),
            ]
            for (method, path, body) in requests {
                let response = try await relay.request(method, path, token: token, json: body)
                expectError(response, 400, "bad_request")
            }
        }
    }

    @Test func addingMembersLogsOneJoinPerNewMember() async throws {
        try await withRelay { relay in
            let (alice, bob, carol, dave, erin) = (
                TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"), TestRedis.uniqueName("carol"),
                TestRedis.uniqueName("dave"), TestRedis.uniqueName("erin")
            )
            let id = try await relay.createGroup(alice, members: [bob])
            let single = try await relay.request("POST", "/channels/\(id)/members", token: relay.token(alice), json: ["user_id": carol])
            #expect(single.status == 200, "\(single)")
            // Idempotent: adding carol again logs nothing.
            let again = try await relay.request("POST", "/channels/\(id)/members", token: relay.token(alice), json: ["user_id": carol])
            #expect(again.status == 200, "\(again)")
            #expect(try await relay.lastSeq(alice, id) == 3)

            // Any member may add; only the new ones are logged.
            let many = try await relay.request(
                "POST",
                "/channels/\(id)/members",
                token: relay.token(bob),
                json: ["user_ids": [dave, erin, carol, alice]]
            )
            #expect(many.status == 200, "\(many)")
            let (events, _) = try await relay.history(alice, id)
            #expect(seqs(events) == [1, 2, 3, 4, 5])
            expectMemberEvent(events[safe: 2], "member_joined", channel: id, seq: 3, user: carol, sender: alice)
            #expect(Set(events.dropFirst(3).compactMap { $0["user_id"].string }) == [dave, erin])
            for event in events.dropFirst(3) {
                expectMemberEvent(
                    event,
                    "member_joined",
                    channel: id,
                    seq: event["seq"].int ?? 0,
                    user: event["user_id"].string ?? "?",
                    sender: bob
                )
            }
            let channel = try await relay.channel(erin, id)
            #expect(channel["member_count"].int == 5)
            #expect(Set(channel["members"].array?.compactMap(\.string) ?? []) == [alice, bob, carol, dave, erin])
            // The new member can post.
            try await relay.send(dave, id, "hello")
        }
    }

    @Test func addingMembersRefusesBadRequests() async throws {
        try await withRelay { relay in
            let (alice, mallory) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("mallory"))
            let id = try await relay.createGroup(alice)
            let path = "/channels/\(id)/members"
            expectError(try await relay.request("POST", path, token: relay.token(mallory), json: ["user_id": mallory]), 403, "forbidden")
            expectError(
                try await relay.request(
                    "POST",
                    "/channels/\(TestRedis.uniqueName("none"))/members",
                    token: relay.token(alice),
                    json: ["user_id": "bob"]
                ),
                404,
                "not_found"
            )
            let badBodies: [Any] = [
                [String: Any](),
                ["user_id": "bad user"],
                ["user_id": ""],
                ["user_id": String(repeating: "u", count: 65)],
                ["user_id": 5],
                ["user_ids": "bob"],
                ["user_ids": ["ok-user", "bad user"]],
                ["user_ids": [1]],
                "bob",
            ]
            for body in badBodies {
                let response = try await relay.request("POST", path, token: relay.token(alice), json: body)
                #expect(response.status == 400, "body \(body): \(response)")
                #expect(response.errorCode == "bad_request", "body \(body): \(response)")
            }
            expectError(
                try await relay.request("POST", path, token: relay.token(alice), rawBody: Array("{\"user_id\":".utf8)),
                400,
                "bad_request"
            )
            #expect(try await relay.lastSeq(alice, id) == 1, "nothing was added by refused requests")
            #expect(try await relay.channel(alice, id)["member_count"].int == 1)
        }
    }

    @Test func membersMayLeaveAndTheCreatorMayRemoveAnyone() async throws {
        try await withRelay { relay in
            let (alice, bob, carol, dave, erin) = (
                TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"), TestRedis.uniqueName("carol"),
                TestRedis.uniqueName("dave"), TestRedis.uniqueName("erin")
            )
            let id = try await relay.createGroup(alice, members: [bob, carol, dave, erin])  // seq 1...5

            // bob leaves.
            let leave = try await relay.request("DELETE", "/channels/\(id)/members/\(bob)", token: relay.token(bob))
            #expect(leave.status == 200, "\(leave)")
            expectError(try await relay.request("GET", "/channels/\(id)", token: relay.token(bob)), 403, "forbidden")
            expectError(
                try await relay.request(
                    "POST",
                    "/channels/\(id)/messages",
                    token: relay.token(bob),
                    json: ["client_msg_id": "x", "text": "hi"]
                ),
                403,
                "forbidden"
            )
            let bobsList = try await relay.request("GET", "/channels", token: relay.token(bob))
            #expect(bobsList.value["channels"].array?.contains { $0["id"].string == id } == false, "\(bobsList)")

            // The creator removes carol.
            let removal = try await relay.request("DELETE", "/channels/\(id)/members/\(carol)", token: relay.token(alice))
            #expect(removal.status == 200, "\(removal)")

            // dave is neither the creator nor erin: refused, nothing logged.
            expectError(try await relay.request("DELETE", "/channels/\(id)/members/\(erin)", token: relay.token(dave)), 403, "forbidden")
            // A non-member cannot remove anyone either.
            expectError(try await relay.request("DELETE", "/channels/\(id)/members/\(erin)", token: relay.token(bob)), 403, "forbidden")

            let (events, _) = try await relay.history(alice, id)
            #expect(seqs(events) == Array(1...7))
            expectMemberEvent(events[safe: 5], "member_left", channel: id, seq: 6, user: bob, sender: bob)
            expectMemberEvent(events[safe: 6], "member_left", channel: id, seq: 7, user: carol, sender: alice)
            let channel = try await relay.channel(erin, id)
            #expect(channel["member_count"].int == 3)
            #expect(Set(channel["members"].array?.compactMap(\.string) ?? []) == [alice, dave, erin])

            // A member who left can be added back, which is logged again.
            let back = try await relay.request("POST", "/channels/\(id)/members", token: relay.token(dave), json: ["user_id": bob])
            #expect(back.status == 200, "\(back)")
            let (after, _) = try await relay.history(alice, id, "after=7")
            #expect(after.count == 1)
            expectMemberEvent(after.first, "member_joined", channel: id, seq: 8, user: bob, sender: dave)

            // The creator, once it left, acts on the channel no more than any other non-member.
            #expect(try await relay.request("DELETE", "/channels/\(id)/members/\(alice)", token: relay.token(alice)).status == 200)
            expectError(try await relay.request("DELETE", "/channels/\(id)/members/\(erin)", token: relay.token(alice)), 403, "forbidden")
            #expect(try await relay.channel(erin, id)["members"].array?.contains { $0.string == erin } == true)
        }
    }

    @Test func removingMembersRefusesBadRequests() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            expectError(
                try await relay.request("DELETE", "/channels/\(TestRedis.uniqueName("none"))/members/\(bob)", token: relay.token(bob)),
                404,
                "not_found"
            )
            for bad in ["bad%20user", String(repeating: "u", count: 65), "a%2Fb", "caf%C3%A9"] {
                expectError(
                    try await relay.request("DELETE", "/channels/\(id)/members/\(bad)", token: relay.token(alice)),
                    400,
                    "bad_request"
                )
            }
            #expect(try await relay.lastSeq(alice, id) == 2)
        }
    }
}

extension Array {
    /// The element at `index`, `nil` past the end (so that a short array fails an expectation
    /// instead of crashing the test process).
    subscript(safe index: Int) -> Element? {
        indices.contains(index) ? self[index] : nil
    }
}
