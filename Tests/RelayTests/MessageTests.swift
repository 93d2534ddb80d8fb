import Foundation
import TestSupport
import Testing

/// Expects `event` to be the `message` event the contract describes.
func expectMessageEvent(
    _ event: JSON?,
    channel: String,
    seq: Int,
    sender: String,
    text: String,
    clientMessageID: String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    let description = String(describing: event)
    #expect(event["channel_id"].string == channel, "\(description)", sourceLocation: sourceLocation)
    #expect(event["seq"].int == seq, "\(description)", sourceLocation: sourceLocation)
    #expect(event["type"].string == "message", "\(description)", sourceLocation: sourceLocation)
    #expect(event["message_id"].string.map { !$0.isEmpty } == true, "\(description)", sourceLocation: sourceLocation)
    #expect(event["sender_id"].string == sender, "\(description)", sourceLocation: sourceLocation)
    #expect(event["text"].string == text, "\(description)", sourceLocation: sourceLocation)
    #expect(event["client_msg_id"].string == clientMessageID, "\(description)", sourceLocation: sourceLocation)
    let createdAt = event["created_at"].int ?? 0
    #expect(
        abs(createdAt - unixMillisecondsNow()) < 60_000,
        "created_at is ms since the epoch: \(description)",
        sourceLocation: sourceLocation
    )
}

@Suite("Sending messages", .timeLimit(.minutes(3)))
struct MessageTests {
    @Test func sendReturns201WithTheWholeEventAndHistoryHasIt() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            let response = try await relay.request(
                "POST",
                "/channels/\(id)/messages",
                token: relay.token(alice),
                json: ["client_msg_id": "c-1", "text": "hello"]
            )
            #expect(response.status == 201, "\(response)")
            #expect(response.headers["content-type"]?.hasPrefix("application/json") == true, "\(response.headers)")
            #expect(response.value?.object?.keys.sorted() == ["message"], "\(response)")
            let first = try #require(response.value["message"], "\(response)")
            expectMessageEvent(first, channel: id, seq: 3, sender: alice, text: "hello", clientMessageID: "c-1")

            let second = try await relay.send(bob, id, "hi alice", clientMessageID: "c-2")
            expectMessageEvent(second, channel: id, seq: 4, sender: bob, text: "hi alice", clientMessageID: "c-2")
            #expect(second["message_id"] != first["message_id"])

            let (events, hasMore) = try await relay.history(alice, id)
            #expect(!hasMore)
            #expect(seqs(events) == [1, 2, 3, 4])
            #expect(events[safe: 2] == first, "history holds the event as sent")
            #expect(events[safe: 3] == second, "history holds the event as sent")
            #expect(try await relay.lastSeq(bob, id) == 4)
        }
    }

    @Test func sameClientMessageIDReturnsTheFirstEventAndLogsNothing() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            let path = "/channels/\(id)/messages"
            let first = try await relay.request("POST", path, token: relay.token(alice), json: ["client_msg_id": "dup", "text": "once"])
            #expect(first.status == 201, "\(first)")

            let again = try await relay.request("POST", path, token: relay.token(alice), json: ["client_msg_id": "dup", "text": "once"])
            #expect(again.status == 200, "\(again)")
            #expect(again.body == first.body, "the first event again, byte for byte:\n\(first.text)\n\(again.text)")
            #expect(again.value == first.value)

            // Another text under the same client_msg_id still gets the first event, and from
            // another session of the same user too.
            let changed = try await relay.request(
                "POST",
                path,
                token: relay.token(alice, session: "phone"),
                json: ["client_msg_id": "dup", "text": "different"]
            )
            #expect(changed.status == 200, "\(changed)")
            #expect(changed.value == first.value, "\(changed)")
            #expect(try await relay.lastSeq(alice, id) == 3, "nothing new was logged")

            // The key is (sender, channel, client_msg_id): bob and another channel get new messages.
            let bobs = try await relay.send(bob, id, "bob's", clientMessageID: "dup")
            expectMessageEvent(bobs, channel: id, seq: 4, sender: bob, text: "bob's", clientMessageID: "dup")
            let other = try await relay.createGroup(alice)
            let elsewhere = try await relay.send(alice, other, "elsewhere", clientMessageID: "dup")
            expectMessageEvent(elsewhere, channel: other, seq: 2, sender: alice, text: "elsewhere", clientMessageID: "dup")

            let (events, _) = try await relay.history(alice, id)
            #expect(events.filter { $0["type"].string == "message" }.count == 2)
        }
    }

    @Test func concurrentSendsOfOneClientMessageIDLogOneMessage() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let responses = try await withThrowingTaskGroup(of: TestResponse.self) { group in
                for _ in 0..<12 {
                    group.addTask {
                        try await relay.request(
                            "POST",
                            "/channels/\(id)/messages",
                            token: relay.token(alice),
                            json: ["client_msg_id": "race", "text": "once"]
                        )
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(responses.filter { $0.status == 201 }.count == 1, "\(responses.map(\.status))")
            #expect(responses.filter { $0.status == 200 }.count == 11, "\(responses.map(\.status))")
            #expect(Set(responses.compactMap { $0.value["message"] }).count == 1, "one event for all")
            #expect(try await relay.lastSeq(alice, id) == 2)
        }
    }

    @Test func clientMessageIDIsRequiredAndAtMost128Characters() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let path = "/channels/\(id)/messages"
            let bodies: [[String: Any]] = [
                ["text": "no id"],
                ["client_msg_id": "", "text": "empty id"],
                ["client_msg_id": String(repeating: "x", count: 129), "text": "long id"],
                ["client_msg_id": 5, "text": "numeric id"],
                ["client_msg_id": NSNull(), "text": "null id"],
                ["client_msg_id": ["a"], "text": "array id"],
            ]
            for body in bodies {
                let response = try await relay.request("POST", path, token: relay.token(alice), json: body)
                #expect(response.status == 400, "body \(body): \(response)")
                #expect(response.errorCode == "bad_request", "body \(body): \(response)")
            }
            #expect(try await relay.lastSeq(alice, id) == 1, "nothing was logged")

            let longest = String(repeating: "y", count: 128)
            let event = try await relay.send(alice, id, "longest id", clientMessageID: longest)
            expectMessageEvent(event, channel: id, seq: 2, sender: alice, text: "longest id", clientMessageID: longest)
        }
    }

    @Test func textMustBeAString() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let bodies: [Any] = [
                ["client_msg_id": "a"],
                ["client_msg_id": "b", "text": 42],
                ["client_msg_id": "c", "text": NSNull()],
                ["client_msg_id": "d", "text": ["hi"]],
                ["client_msg_id": "e", "text": ["t": "hi"]],
                ["client_msg_id": "f", "text": true],
                "hi",
                ["hi"],
                42,
            ]
            for body in bodies {
                let response = try await relay.request("POST", "/channels/\(id)/messages", token: relay.token(alice), json: body)
                #expect(response.status == 400, "body \(body): \(response)")
                #expect(response.errorCode == "bad_request", "body \(body): \(response)")
            }
            #expect(try await relay.lastSeq(alice, id) == 1)
        }
    }

    @Test func malformedJSONIsBadRequest() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let bodies: [[UInt8]] = [
                [],
                Array("{".utf8),
                Array(#"{"client_msg_id": "a", "text": "hi""#.utf8),
                Array(#"{"client_msg_id": "a", "text": "hi",}"#.utf8),
                Array(#"{'client_msg_id': 'a', 'text': 'hi'}"#.utf8),
                Array(#"{"client_msg_id": "a", "text": "hi"} trailing"#.utf8),
                Array("client_msg_id=a&text=hi".utf8),
                Array(#"{"client_msg_id": "a", "text": "\x"}"#.utf8),
                Array(#"{"client_msg_id": "a", "text": "#.utf8) + [0xFF, 0xFE, 0x22, 0x7D],  // not UTF-8
                Array(#"{"client_msg_id": "a", "text": "#.utf8) + [0xC3, 0x22, 0x7D],  // a truncated sequence
            ]
            for body in bodies {
                let response = try await relay.request("POST", "/channels/\(id)/messages", token: relay.token(alice), rawBody: body)
                #expect(response.status == 400, "body \(String(decoding: body, as: UTF8.self).debugDescription): \(response)")
                #expect(response.errorCode == "bad_request", "\(response)")
            }
            #expect(try await relay.lastSeq(alice, id) == 1)
        }
    }

    @Test func deeplyNestedJSONIsRefusedWithoutACrash() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let depth = 30_000
            let nested =
                Array(#"{"client_msg_id": "a", "text": "hi", "x": "#.utf8) + [UInt8](repeating: UInt8(ascii: "["), count: depth)
                + [UInt8](repeating: UInt8(ascii: "]"), count: depth) + Array("}".utf8)
            let response = try await relay.request("POST", "/channels/\(id)/messages", token: relay.token(alice), rawBody: nested)
            #expect([400, 413].contains(response.status), "\(response)")
            // Still serving.
            try await relay.send(alice, id, "still here")
        }
    }

    @Test func nonMembersAreForbiddenAndUnknownChannelsNotFound() async throws {
        try await withRelay { relay in
            let (alice, mallory) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("mallory"))
            let id = try await relay.createGroup(alice)
            let body = ["client_msg_id": "m", "text": "let me in"]
            expectError(
                try await relay.request("POST", "/channels/\(id)/messages", token: relay.token(mallory), json: body),
                403,
                "forbidden"
            )
            expectError(
                try await relay.request(
                    "POST",
                    "/channels/\(TestRedis.uniqueName("none"))/messages",
                    token: relay.token(alice),
                    json: body
                ),
                404,
                "not_found"
            )
            #expect(try await relay.lastSeq(alice, id) == 1)
        }
    }

    @Test func textLimitIsCountedInUTF8Bytes() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let limit = 16 * 1024
            let accepted = [
                String(repeating: "a", count: limit),
                String(repeating: "😀", count: limit / 4),  // 4 bytes each: exactly the limit
            ]
            for text in accepted {
                let event = try await relay.send(alice, id, text)
                #expect(event["text"].string == text)
            }
            let refused = [
                String(repeating: "a", count: limit + 1),
                String(repeating: "😀", count: limit / 4 + 1),
                String(repeating: "é", count: limit / 2 + 1),  // 8193 characters, 16386 bytes
            ]
            for text in refused {
                let response = try await relay.request(
                    "POST",
                    "/channels/\(id)/messages",
                    token: relay.token(alice),
                    json: ["client_msg_id": UUID().uuidString, "text": text]
                )
                expectOverLimit(response)
            }
            #expect(try await relay.lastSeq(alice, id) == 3, "the refused texts were not logged")
        }
    }

    @Test func bodyOver64KiBIs413AndABodyOfExactly64KiBIsAccepted() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let path = "/channels/\(id)/messages"
            let limit = 64 * 1024
            // Valid JSON padded with spaces to an exact size: only the size can be refused.
            func padded(_ json: String, to size: Int) -> [UInt8] {
                let bytes = Array(json.utf8)
                return Array(bytes.dropLast()) + [UInt8](repeating: 0x20, count: size - bytes.count) + [bytes.last!]
            }
            let exact = try await relay.request(
                "POST",
                path,
                token: relay.token(alice),
                rawBody: padded(#"{"client_msg_id": "exact", "text": "fits"}"#, to: limit)
            )
            #expect(exact.status == 201, "\(exact)")

            let over = try await relay.request(
                "POST",
                path,
                token: relay.token(alice),
                rawBody: padded(#"{"client_msg_id": "over", "text": "too big"}"#, to: limit + 1)
            )
            expectError(over, 413, "too_large")

            let huge = try await relay.request(
                "POST",
                path,
                token: relay.token(alice),
                json: ["client_msg_id": "huge", "text": String(repeating: "z", count: 1_000_000)]
            )
            expectError(huge, 413, "too_large")

            // Without a Content-Length: the limit holds for a chunked body too.
            let chunked = try await relay.request(
                "POST",
                path,
                token: relay.token(alice),
                rawBody: HTTPExchange.chunked(padded(#"{"client_msg_id": "chunked", "text": "too big"}"#, to: 2 * limit)),
                headers: ["Transfer-Encoding": "chunked"]
            )
            expectError(chunked, 413, "too_large")

            let (events, _) = try await relay.history(alice, id)
            #expect(events.compactMap { $0["client_msg_id"].string } == ["exact"], "only the body that fits was logged")
            try await relay.send(alice, id, "still serving")
        }
    }

    @Test func unicodeTextRoundTripsExactly() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            let texts = [
                "emoji 😀 family 👩‍👩‍👧‍👦 flag 🇫🇷 skin 👍🏽",
                #"quotes " ' “curly” and backslashes \ \\ \n \u0041 (not escapes)"#,
                "new\nline\r\nand\ttab",
                "controls \u{01}\u{02}\u{07}\u{08}\u{0B}\u{0C}\u{1B}\u{1F}\u{7F} end",
                "nul \u{00} inside",
                "line separators \u{2028}\u{2029} bom \u{FEFF} zero-width \u{200B}",
                "combining e\u{301} vs \u{E9}, 中文, العربية, עברית",
                "</script><script>alert(1)</script> & < > {\"json\": [1, 2]}",
                "{{channel_id}} %s %d $1 ${x}",
                "astral 𝄞 𐍈 \u{10FFFF}",
                " ",
                String(repeating: "🦄", count: 1000),
            ]
            for (index, text) in texts.enumerated() {
                let event = try await relay.send(alice, id, text, clientMessageID: "u\(index)")
                #expect(event["text"].string == text, "sample \(index) as sent back")
                #expect(event["text"].string?.unicodeScalars.elementsEqual(text.unicodeScalars) == true, "sample \(index) scalars")
            }
            let (events, _) = try await relay.history(bob, id, "limit=200")
            let messages = events.filter { $0["type"].string == "message" }
            #expect(messages.count == texts.count)
            for (index, text) in texts.enumerated() {
                let event = messages.first { $0["client_msg_id"].string == "u\(index)" }
                #expect(
                    event["text"].string?.unicodeScalars.elementsEqual(text.unicodeScalars) == true,
                    "sample \(index) from history: \(String(describing: event))"
                )
            }
        }
    }

    @Test func jsonEscapesInTheRequestAreDecoded() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let body = #"{"client_msg_id": "\u0065sc", "text": "\u00e9\ud83d\ude00\n\"\/\\\u0000"}"#
            let response = try await relay.request("POST", "/channels/\(id)/messages", token: relay.token(alice), rawBody: Array(body.utf8))
            #expect(response.status == 201, "\(response)")
            #expect(response.value["message"]["text"].string == "é😀\n\"/\\\u{0}", "\(response)")
            #expect(response.value["message"]["client_msg_id"].string == "esc", "\(response)")
        }
    }
}
