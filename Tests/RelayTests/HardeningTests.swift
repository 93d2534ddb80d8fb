import Foundation
import Relay
import TestSupport
import Testing

/// Inputs an attacker or a careless client sends, indexes nobody can grow, DMs nobody can probe.
// Serialized: each test runs a relay, and a burst of them at the suite's start starves the
// other suites' timeouts on a small machine.
@Suite("Abuse-proof inputs and indexes", .serialized, .timeLimit(.minutes(3)))
struct HardeningTests {
    // MARK: HTTP/1.1 itself

    /// A request HTTP/1.1 cannot parse is answered 400 and its connection closed, whatever is
    /// wrong with it: none is left open, waiting for a request that cannot come.
    @Test func requestsThatCannotBeParsedAreAnswered400AndClosed() async throws {
        try await withRelay { relay in
            let requests: [(String, String)] = [
                ("an unknown method", "FOO /channels HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
                ("no request line", "GARBAGE\r\n\r\n"),
                ("a method in lower case", "get /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
                ("a length that is not a number", "POST /channels HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"),
                (
                    "a length and chunks",
                    "POST /channels HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                ),
                ("a header over the limit", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 90_000))\r\n\r\n"),
            ]
            for (what, request) in requests {
                let (socket, head) = try await RawWebSocket.open(port: relay.port, request: request)
                #expect(WebSocketConformanceTests.status(head) == 400, "\(what): \(head)")
                #expect(try await socket.read(timeout: .seconds(10)) == .ended, "\(what): the connection stays open")
            }
            #expect(try await relay.request("GET", "/healthz").status == 200)

            // After good requests pipelined before it: their answers first, in order, then the 400.
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let body = #"{"client_msg_id":"p1","text":"pipelined"}"#
            let send =
                "POST /channels/\(id)/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(relay.token(alice))\r\n"
                + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
            let (pipelined, first) = try await RawWebSocket.open(port: relay.port, request: send + "FOO / HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(WebSocketConformanceTests.status(first) == 201, "\(first)")
            let rest = String(decoding: try await pipelined.bytesToEnd(timeout: .seconds(10)), as: UTF8.self)
            #expect(rest.contains("HTTP/1.1 400 Bad Request\r\n"), "\(rest)")
            #expect(try await relay.lastSeq(alice, id) == 2)
        }
    }

    /// A connection that never completes a request, or keeps nothing under way, is closed after
    /// the idle timeout: open connections cannot pile up until the relay runs out of files.
    @Test func connectionsWithNoRequestUnderWayAreClosedWhenIdle() async throws {
        let configure: RelayConfigurator = { $0.limits.httpIdleTimeout = .seconds(1) }
        try await withRelay(configure) { relay in
            let unfinished = try await RawWebSocket.connect(port: relay.port, sending: Array("GET /healthz HTTP/1.1\r\nHost: x\r\n".utf8))
            #expect(try await unfinished.read(timeout: .seconds(10)) == .ended, "a request head that never ends")

            let silent = try await RawWebSocket.connect(port: relay.port, sending: [])
            #expect(try await silent.read(timeout: .seconds(10)) == .ended, "a connection that sends nothing")

            let (keptAlive, head) = try await RawWebSocket.open(port: relay.port, request: "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(WebSocketConformanceTests.status(head) == 200)
            // The body (its length is in the head) and then the end of the connection.
            var ended = false
            for _ in 0..<3 where !ended {
                if case .ended = try await keptAlive.read(timeout: .seconds(10)) { ended = true }
            }
            #expect(ended, "a kept-alive connection with no request")
        }
    }

    /// A client that sends `Expect: 100-continue` and waits gets `100 Continue` at once and then
    /// its answer; one whose body is over the limit gets its 413 and the end of the connection,
    /// and nothing else.
    @Test func aClientThatExpectsContinueIsToldToGoOn() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let body = #"{"client_msg_id": "e1", "text": "after the 100"}"#
            let head =
                "POST /channels/\(id)/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(relay.token(alice))\r\n"
                + "Content-Type: application/json\r\nExpect: 100-continue\r\n"
            // No body is sent before the 100: without it, the head would time out.
            let (socket, interim) = try await RawWebSocket.open(
                port: relay.port,
                request: head + "Content-Length: \(body.utf8.count)\r\n\r\n",
                timeout: .seconds(5)
            )
            #expect(interim.hasPrefix("HTTP/1.1 100 Continue\r\n"), "\(interim)")
            try await socket.send(Array(body.utf8))
            let final = try await socket.readHead()
            #expect(WebSocketConformanceTests.status(final) == 201, "\(final)")
            #expect(!Self.says(final, "connection", "close"), "\(final)")
            #expect(try await relay.lastSeq(alice, id) == 2)

            let (tooLarge, refusal) = try await RawWebSocket.open(port: relay.port, request: head + "Content-Length: 1000000000\r\n\r\n")
            #expect(WebSocketConformanceTests.status(refusal) == 413, "\(refusal)")
            #expect(Self.says(refusal, "connection", "close"), "\(refusal)")
            let rest = String(decoding: try await tooLarge.bytesToEnd(timeout: .seconds(5)), as: UTF8.self)
            #expect(rest.hasPrefix(#"{"error":{"code":"too_large""#) && !rest.contains("HTTP/"), "after the 413: \(rest)")
        }
    }

    /// HTTP/1.0 connections end after their answer unless they asked to be kept alive, and are
    /// told which; an HTTP/1.1 request that asks for the end gets it.
    @Test func connectionsEndAfterTheAnswerWhenHTTPSaysSo() async throws {
        try await withRelay { relay in
            let get = { (version: String, connection: String?) in
                "GET /healthz HTTP/\(version)\r\nHost: 127.0.0.1\r\n\(connection.map { "Connection: \($0)\r\n" } ?? "")\r\n"
            }
            for (version, connection) in [("1.0", nil), ("1.1", "close")] {
                let (socket, head) = try await RawWebSocket.open(port: relay.port, request: get(version, connection))
                #expect(WebSocketConformanceTests.status(head) == 200, "\(head)")
                #expect(Self.says(head, "connection", "close"), "\(head)")
                let body = String(decoding: try await socket.bytesToEnd(timeout: .seconds(5)), as: UTF8.self)
                #expect(!body.contains("HTTP/"), "HTTP/\(version): \(body)")
            }
            let (kept, head) = try await RawWebSocket.open(port: relay.port, request: get("1.0", "keep-alive"))
            #expect(Self.says(head, "connection", "keep-alive"), "\(head)")
            let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
            let count = try #require(length.flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) })
            _ = try await kept.bytes(count)
            try await kept.send(Array(get("1.0", "keep-alive").utf8))
            let second = try await kept.readHead()
            #expect(WebSocketConformanceTests.status(second) == 200, "\(second)")
        }
    }

    /// An `Upgrade` to a protocol the relay does not speak (`h2c`, as `curl --http2` asks on any
    /// `http://` URL) is ignored: the request is answered as if it had none (it was dropped
    /// unanswered). A `CONNECT` (a tunnel) is answered 400, and the connection ends (it hung for
    /// the idle timeout).
    @Test func anUpgradeToAnUnknownProtocolIsIgnoredAndATunnelRefused() async throws {
        try await withRelay { relay in
            for upgrade in [
                "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA", "Upgrade: foo",
                "Upgrade: websocket/13",
            ] {
                let request = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\(upgrade)\r\n\r\n"
                let (_, head) = try await RawWebSocket.open(port: relay.port, request: request, timeout: .seconds(5))
                #expect(WebSocketConformanceTests.status(head) == 200, "\(upgrade): \(head)")
            }
            let (tunnel, head) = try await RawWebSocket.open(
                port: relay.port,
                request: "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n",
                timeout: .seconds(5)
            )
            #expect(WebSocketConformanceTests.status(head) == 400, "\(head)")
            #expect(Self.says(head, "connection", "close"), "\(head)")
            // NIO frames any answer to a CONNECT without a body; the connection ends after it.
            let rest = try await tunnel.bytesToEnd(timeout: .seconds(5))
            #expect(rest.isEmpty, "\(rest)")
        }
    }

    /// A WebSocket handshake is what RFC 6455 section 4.2.1 has a client send, or it is not
    /// upgraded: a GET of HTTP/1.1 whose `Connection` asks to upgrade (among other tokens, as
    /// Firefox sends it), with no body.
    @Test func onlyAWellFormedHandshakeIsUpgraded() async throws {
        try await withRelay { relay in
            let query = "token=\(relay.token(TestRedis.uniqueName("alice")))"
            let good = RawWebSocket.handshakeRequest(port: relay.port, path: "/ws", query: query)
            let refused = [
                "POST": good.replacingOccurrences(of: "GET /ws", with: "POST /ws"),
                "HTTP/1.0": good.replacingOccurrences(of: " HTTP/1.1\r\n", with: " HTTP/1.0\r\n"),
                "no Connection": RawWebSocket.handshakeRequest(port: relay.port, path: "/ws", query: query, omit: ["Connection"]),
                "a body": good.replacingOccurrences(of: "\r\n\r\n", with: "\r\nContent-Length: 5\r\n\r\nhello"),
            ]
            for (what, request) in refused {
                let (_, head) = try await RawWebSocket.open(port: relay.port, request: request, timeout: .seconds(5))
                #expect(WebSocketConformanceTests.status(head).map { (400..<500).contains($0) } == true, "\(what): \(head)")
            }
            let firefox = RawWebSocket.handshakeRequest(
                port: relay.port,
                path: "/ws",
                query: query,
                replace: ["Connection": "keep-alive, Upgrade"]
            )
            let (_, head) = try await RawWebSocket.open(port: relay.port, request: firefox, timeout: .seconds(5))
            #expect(WebSocketConformanceTests.status(head) == 101, "\(head)")
        }
    }

    /// A body cut short (the client went away) or malformed (a bad chunk) is the client's fault:
    /// counted and logged as a 400, never as a 500.
    @Test func aBodyCutShortOrMalformedIsNoServerError() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let head = "POST /channels/\(id)/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(relay.token(alice))\r\n"
            let cut = try await RawWebSocket.connect(port: relay.port, sending: Array((head + "Content-Length: 100\r\n\r\n{\"cl").utf8))
            try await Task.sleep(for: .milliseconds(200))
            cut.shutdownWrite()
            _ = try? await cut.bytesToEnd(timeout: .seconds(5))
            let chunks = head + "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"cli\r\nzz\r\n"
            let chunked = try await RawWebSocket.connect(port: relay.port, sending: Array(chunks.utf8))
            let answers = String(decoding: try await chunked.bytesToEnd(timeout: .seconds(5)), as: UTF8.self)
            #expect(answers.components(separatedBy: "HTTP/1.1 ").count == 2, "one answer, a 400: \(answers)")
            try await waitUntil("both are counted") {
                let metrics = String(decoding: try await relay.request("GET", "/metrics").body, as: UTF8.self)
                return metrics.contains(#"route="/channels/{channel}/messages",method="POST",status="400"} 2"#)
            }
            let metrics = String(decoding: try await relay.request("GET", "/metrics").body, as: UTF8.self)
            #expect(!metrics.contains(#"status="500""#), "\(metrics)")
        }
    }

    /// An id in a path may be percent-encoded, even where it need not be (RFC 3986: `%67` is `g`);
    /// once decoded, it must still be an id.
    @Test func idsInAPathArePercentDecoded() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            func encoded(_ text: String) -> String { text.utf8.map { String(format: "%%%02X", $0) }.joined() }
            let channel = try await relay.request("GET", "/channels/\(encoded(id))", token: relay.token(alice))
            #expect(channel.status == 200 && channel.value["id"].string == id, "\(channel)")
            let removed = try await relay.request("DELETE", "/channels/\(id)/members/\(encoded(bob))", token: relay.token(alice))
            #expect(removed.status == 200, "\(removed)")
            expectError(try await relay.request("GET", "/channels/a%2Fb", token: relay.token(alice)), 400, "bad_request")
            expectError(try await relay.request("GET", "/channels/a%zz", token: relay.token(alice)), 400, "bad_request")
        }
    }

    /// A web page of another origin may call the API (CORS): a preflight is answered 204 with
    /// what it may send, and every answer, errors included, allows the page's origin.
    @Test func pagesOfAnyOriginMayCallTheAPI() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let origin = "http://localhost:5173"
            let preflight = try await relay.request(
                "OPTIONS",
                "/channels",
                headers: [
                    "Origin": origin, "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, content-type",
                ]
            )
            #expect(preflight.status == 204, "\(preflight)")
            #expect(preflight.headers["access-control-allow-origin"] == "*")
            let methods = preflight.headers["access-control-allow-methods"] ?? ""
            #expect(["POST", "PATCH", "DELETE"].allSatisfy(methods.contains), "\(methods)")
            #expect(preflight.headers["access-control-allow-headers"]?.lowercased().contains("authorization") == true)
            let listed = try await relay.request("GET", "/channels", token: relay.token(alice), headers: ["Origin": origin])
            #expect(listed.status == 200 && listed.headers["access-control-allow-origin"] == "*", "\(listed)")
            let refused = try await relay.request("GET", "/channels", headers: ["Origin": origin])
            #expect(refused.status == 401 && refused.headers["access-control-allow-origin"] == "*", "\(refused)")
            let script = try await relay.request("GET", "/relay.js", headers: ["Origin": origin])
            #expect(script.status == 200 && script.headers["access-control-allow-origin"] == "*", "\(script)")
            // The WebSocket's refusals too: GET /ws without an upgrade (426), and a bad handshake (400).
            let plain = try await relay.request("GET", "/ws", headers: ["Origin": origin])
            #expect(plain.status == 426 && plain.headers["access-control-allow-origin"] == "*", "\(plain)")
            let (_, keyless) = try await RawWebSocket.open(
                port: relay.port,
                request: "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: \(origin)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    + "Sec-WebSocket-Version: 13\r\n\r\n"
            )
            #expect(WebSocketConformanceTests.status(keyless) == 400, "\(keyless)")
            #expect(Self.says(keyless, "access-control-allow-origin", "*"), "\(keyless)")
        }
    }

    /// Whether a response head has the header `name` (case aside) with the value `value`.
    static func says(_ head: String, _ name: String, _ value: String) -> Bool {
        head.lowercased().split(separator: "\r\n").contains { $0 == "\(name): \(value)" }
    }

    /// A query parameter given twice is a bad request, as a JSON key given twice is: which one
    /// counts would be the relay's guess (a second `limit` over the range passed unseen).
    @Test func aQueryParameterGivenTwiceIsABadRequest() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let token = relay.token(alice)
            for path in [
                "/channels/\(id)/messages?limit=2&limit=500", "/channels/\(id)/messages?after=1&after=2",
                "/presence?user_ids=\(alice)&user_ids=bob",
            ] {
                let response = try await relay.request("GET", path, token: token)
                expectError(response, 400, "bad_request")
                #expect(response.errorMessage?.contains("given 2 times") == true, "\(path): \(response)")
            }
            #expect(try await relay.request("GET", "/channels/\(id)/messages?limit=2", token: token).status == 200)
        }
    }

    /// A field of the wrong type is named as a client writes it (`members[1]`), not as the
    /// decoder's path (`members.Index 1`).
    @Test func aFieldOfTheWrongTypeIsNamedAsTheClientWroteIt() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let response = try await relay.request(
                "POST",
                "/channels",
                token: relay.token(alice),
                json: ["type": "group", "members": ["bob", 7]]
            )
            expectError(response, 400, "bad_request")
            #expect(response.errorMessage == "wrong type for members[1]", "\(response)")
        }
    }

    // MARK: client_msg_id in bytes

    /// One letter and 200 combining marks is one character but 401 bytes: over the 128-byte limit.
    @Test func clientMessageIDIsLimitedInBytesNotCharacters() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let path = "/channels/\(id)/messages"
            let zalgo = "a" + String(repeating: "\u{0301}", count: 200)
            #expect(zalgo.count == 1)
            let token = relay.token(alice)
            expectError(
                try await relay.request("POST", path, token: token, json: ["client_msg_id": zalgo, "text": "hi"]),
                400,
                "bad_request"
            )
            let wide = String(repeating: "日", count: 43)  // 129 bytes
            expectError(
                try await relay.request("POST", path, token: token, json: ["client_msg_id": wide, "text": "hi"]),
                400,
                "bad_request"
            )
            let fits = String(repeating: "日", count: 42) + "ab"  // 128 bytes
            let sent = try await relay.request("POST", path, token: token, json: ["client_msg_id": fits, "text": "hi"])
            #expect(sent.status == 201, "\(sent)")
            #expect(sent.value["message"]["client_msg_id"].string == fits)
        }
    }

    // MARK: Strict JSON

    @Test func aKeyGivenTwiceIsABadRequest() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let token = relay.token(alice)
            let twice = Array(#"{"client_msg_id": "a", "text": "first", "text": "second"}"#.utf8)
            expectError(try await relay.request("POST", "/channels/\(id)/messages", token: token, rawBody: twice), 400, "bad_request")
            // The same key spelled with an escape is the same key.
            let escaped = Array(#"{"client_msg_id": "a", "text": "first", "t\u0065xt": "second"}"#.utf8)
            expectError(try await relay.request("POST", "/channels/\(id)/messages", token: token, rawBody: escaped), 400, "bad_request")
            let create = Array(#"{"type": "group", "members": [], "type": "dm"}"#.utf8)
            expectError(try await relay.request("POST", "/channels", token: token, rawBody: create), 400, "bad_request")
            // Nested objects are checked too; equal keys in different objects are fine.
            let nested = Array(#"{"type": "group", "members": [], "name": "n", "x": {"a": 1, "a": 2}}"#.utf8)
            expectError(try await relay.request("POST", "/channels", token: token, rawBody: nested), 400, "bad_request")
            let siblings = Array(#"{"type": "group", "members": [], "x": {"a": 1}, "y": {"a": 1}}"#.utf8)
            #expect(try await relay.request("POST", "/channels", token: token, rawBody: siblings).status == 201)
            #expect(try await relay.history(alice, id).events.count == 1, "nothing was sent")
        }
    }

    /// A body that is JSON but not an object says so, rather than naming no field.
    @Test func aBodyThatIsNotAnObjectIsABadRequestThatSaysSo() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let token = relay.token(alice)
            for body in ["[]", #""x""#, "1", "null", "true"] {
                for path in ["/channels/\(id)/messages", "/channels/\(id)/read", "/channels"] {
                    let response = try await relay.request("POST", path, token: token, rawBody: Array(body.utf8))
                    expectError(response, 400, "bad_request")
                    #expect(response.errorMessage == "the body must be a JSON object", "\(path) \(body): \(response)")
                }
            }
            #expect(try await relay.history(alice, id).events.count == 1, "nothing was sent")
        }
    }

    @Test(
        arguments: [
            [0xFF], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xE2, 0x82], [0xF4, 0x90, 0x80, 0x80], [0x80],
        ] as [[UInt8]]
    )
    func invalidUTF8InABodyIsABadRequest(_ bad: [UInt8]) async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let body = Array(#"{"client_msg_id": "u", "text": "a"#.utf8) + bad + Array(#"b"}"#.utf8)
            expectError(
                try await relay.request("POST", "/channels/\(id)/messages", token: relay.token(alice), rawBody: body),
                400,
                "bad_request"
            )
            #expect(try await relay.history(alice, id).events.count == 1, "nothing was sent")
        }
    }

    // MARK: The users' channel index

    /// Calls that fail (a channel that does not exist, an id that is taken) write nobody's
    /// index: before, each one added the channel to every named user's index for good.
    @Test func failedCallsLeaveTheVictimsIndexEmpty() async throws {
        try await withRelay { relay in
            let (mallory, victim) = (TestRedis.uniqueName("mallory"), TestRedis.uniqueName("victim"))
            let token = relay.token(mallory)
            for round in 0..<50 {
                let missing = TestRedis.uniqueName("missing\(round)")
                expectError(
                    try await relay.request("POST", "/channels/\(missing)/members", token: token, json: ["user_ids": [victim]]),
                    404,
                    "not_found"
                )
            }
            let taken = try await relay.createGroup(mallory)
            for _ in 0..<20 {
                expectError(
                    try await relay.request(
                        "POST",
                        "/channels",
                        token: token,
                        json: ["type": "group", "id": taken, "members": [victim]]
                    ),
                    409,
                    "conflict"
                )
            }
            // A group the victim is not in, where mallory is not a member either.
            let other = try await relay.createGroup(TestRedis.uniqueName("owner"))
            expectError(
                try await relay.request("POST", "/channels/\(other)/members", token: token, json: ["user_id": victim]),
                403,
                "forbidden"
            )
            #expect(try await redisCLI(["SCARD", "user:{\(victim)}:channels"]) == ["0"])
            let listed = try await relay.request("GET", "/channels", token: relay.token(victim))
            #expect(listed.value["channels"].array?.isEmpty == true, "\(listed)")
        }
    }

    /// An index entry whose channel does not list the user is dropped when it is read.
    @Test func staleIndexEntriesAreRemovedOnRead() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let kept = try await relay.createGroup(alice)
            let left = try await relay.createGroup(bob, members: [alice])
            let index = "user:{\(alice)}:channels"
            let ghost = TestRedis.uniqueName("ghost")
            _ = try await redisCLI(["SADD", index, ghost])
            // Removed from `left` behind the relay's back: its index entry stays stale.
            _ = try await redisCLI(["SREM", "ch:{\(left)}:members", alice])
            #expect(Set(try await redisCLI(["SMEMBERS", index])) == [kept, left, ghost])
            let listed = try await relay.request("GET", "/channels", token: relay.token(alice))
            #expect(listed.value["channels"].array?.compactMap { $0["id"].string } == [kept], "\(listed)")
            #expect(try await redisCLI(["SMEMBERS", index]) == [kept])
        }
    }

    // MARK: DMs cannot be probed

    /// A DM the caller is not in answers every route exactly as a channel that does not exist.
    @Test func directMessagesAnswerNonMembersAsIfTheyDidNotExist() async throws {
        try await withRelay { relay in
            let (alice, bob, eve) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"), TestRedis.uniqueName("eve"))
            let created = try await relay.request("POST", "/channels", token: relay.token(alice), json: ["type": "dm", "members": [bob]])
            #expect(created.status == 201, "\(created)")
            let dm = try #require(created.value["id"].string)
            let message = try await relay.send(alice, dm, "secret")
            let messageID = try #require(message["message_id"].string)
            let missing = "dm-" + String(repeating: "0", count: 31) + "1"
            let token = relay.token(eve)
            func both(_ method: String, _ path: (String) -> String, json: Any? = nil) async throws {
                let existing = try await relay.request(method, path(dm), token: token, json: json)
                let absent = try await relay.request(method, path(missing), token: token, json: json)
                #expect(existing.status == 404, "\(existing)")
                #expect(existing.text == absent.text, "\(method) \(path("C")): \(existing) vs \(absent)")
            }
            try await both("GET", { "/channels/\($0)" })
            try await both("GET", { "/channels/\($0)/messages" })
            try await both("GET", { "/channels/\($0)/members" })
            try await both("POST", { "/channels/\($0)/messages" }, json: ["client_msg_id": "p", "text": "hi"])
            try await both("PATCH", { "/channels/\($0)/messages/\(messageID)" }, json: ["text": "x"])
            try await both("DELETE", { "/channels/\($0)/messages/\(messageID)" })
            try await both("POST", { "/channels/\($0)/read" }, json: ["seq": 1])
            try await both("POST", { "/channels/\($0)/members" }, json: ["user_id": eve])
            try await both("DELETE", { "/channels/\($0)/members/\(eve)" })
            try await both("DELETE", { "/channels/\($0)/members/\(alice)" })
            // Members still get the DM's own rules.
            expectError(
                try await relay.request("POST", "/channels/\(dm)/members", token: relay.token(alice), json: ["user_id": eve]),
                400,
                "bad_request"
            )
        }
    }

    // MARK: Members, paged

    @Test func membersArePagedAndTheChannelObjectListsThemOnlyUpTo1000() async throws {
        try await withRelay { relay in
            let owner = TestRedis.uniqueName("owner")
            let prefix = TestRedis.uniqueName("m")
            let first = (0..<999).map { "\(prefix)-\($0)" }
            let id = try await relay.createGroup(owner, members: first)
            let token = relay.token(owner)
            let small = try await relay.channel(owner, id)
            #expect(small["members"].array?.count == 1000, "listed at 1,000")
            #expect(small["member_count"].int == 1000)

            let added = try await relay.request(
                "POST",
                "/channels/\(id)/members",
                token: token,
                json: ["user_ids": ["\(prefix)-x", "\(prefix)-y"]]
            )
            #expect(added.status == 200, "\(added)")
            let big = try await relay.channel(owner, id)
            #expect(big["members"] == nil, "no members above 1,000: \(String(describing: big.object?.keys.sorted()))")
            #expect(big["member_count"].int == 1002)

            let seen = try await self.walkMembers(relay, id, as: owner, limit: { _ in 100 })
            #expect(Set(seen) == Set(first + [owner, "\(prefix)-x", "\(prefix)-y"]))
            #expect(seen.count == Set(seen).count, "no member twice while nothing changes")

            // A page is whole SSCAN steps: it may stop a bucket short of its limit.
            let defaultPage = try await relay.request("GET", "/channels/\(id)/members", token: token)
            #expect(
                (90...100).contains(defaultPage.value["members"].array?.count ?? 0),
                "default limit 100: \(defaultPage.text.prefix(200))"
            )
            for bad in [
                "limit=0", "limit=1001", "limit=x", "cursor=abc", "cursor=12:a%20b", "cursor=%2B5", "cursor=-0", "cursor=007", "cursor=",
                "limit=2&limit=500", "cursor=0&cursor=0",
            ] {
                expectError(try await relay.request("GET", "/channels/\(id)/members?\(bad)", token: token), 400, "bad_request")
            }
            expectError(
                try await relay.request("GET", "/channels/\(id)/members", token: relay.token(TestRedis.uniqueName("stranger"))),
                403,
                "forbidden"
            )
        }
    }

    /// Walks the members of `id` as `owner`, the limit of each page from `limit` (by page index),
    /// calling `between` with each page before asking for the next.
    private func walkMembers(
        _ relay: RelayTestClient,
        _ id: String,
        as owner: String,
        limit: (Int) -> Int,
        between: ([String]) async throws -> Void = { _ in }
    ) async throws -> [String] {
        var seen: [String] = []
        var cursor: String?
        var pages = 0
        repeat {
            let query =
                "limit=\(limit(pages))"
                + (cursor.map { "&cursor=\($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? $0)" } ?? "")
            let page = try await relay.request("GET", "/channels/\(id)/members?\(query)", token: relay.token(owner))
            #expect(page.status == 200, "\(page)")
            let members = page.value["members"].array?.compactMap(\.string) ?? []
            #expect(members.count <= limit(pages), "a page holds at most its limit: \(members.count)")
            seen += members
            cursor = page.value["next_cursor"].string
            if cursor == nil { #expect(page.value?.object?["next_cursor"] == .null, "next_cursor is null at the end: \(page)") }
            pages += 1
            if cursor != nil { try await between(members) }
        } while cursor != nil && pages < 2000
        #expect(cursor == nil, "the walk ends")
        return seen
    }

    @Test func aMembersWalkMissesNoOneWhenItsPagesChangeSize() async throws {
        try await withRelay { relay in
            let owner = TestRedis.uniqueName("owner")
            let prefix = TestRedis.uniqueName("m")
            let members = (0..<600).map { "\(prefix)-\($0)" }
            let id = try await relay.createGroup(owner, members: members)
            let everyone = Set(members + [owner])
            for (first, then) in [(2, 1000), (1, 100), (7, 3), (1000, 1)] {
                let seen = try await self.walkMembers(relay, id, as: owner, limit: { $0 == 0 ? first : then })
                #expect(Set(seen) == everyone, "limit \(first), then \(then): \(everyone.subtracting(seen).count) never listed")
            }
        }
    }

    @Test func aMembersWalkListsEveryoneWhoStaysWhileOthersLeave() async throws {
        try await withRelay { relay in
            let owner = TestRedis.uniqueName("owner")
            for limit in [10, 1, 3] {
                let prefix = TestRedis.uniqueName("m")
                let members = (0..<(limit == 10 ? 600 : 200)).map { "\(prefix)-\($0)" }
                let id = try await relay.createGroup(owner, members: members)
                // After each page, two of the members just listed leave: the step that listed
                // them, run again, finds fewer ids and reads on into buckets not listed yet.
                var removed: Set<String> = []
                let seen = try await self.walkMembers(relay, id, as: owner, limit: { _ in limit }) { page in
                    for user in page.filter({ $0 != owner }).prefix(2) {
                        let gone = try await relay.request("DELETE", "/channels/\(id)/members/\(user)", token: relay.token(owner))
                        #expect(gone.status == 200, "\(gone)")
                        removed.insert(user)
                    }
                }
                let stayed = Set(members + [owner]).subtracting(removed)
                #expect(
                    stayed.isSubset(of: seen),
                    "limit \(limit): \(stayed.subtracting(seen).sorted().prefix(5)) stayed and were never listed"
                )
            }
        }
    }

    // MARK: Retention and first_seq

    @Test func historyAndTheChannelSayWhereTheLogBegins() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let page = try await relay.request("GET", "/channels/\(id)/messages", token: relay.token(alice))
            #expect(page.value["first_seq"].int == 1, "\(page)")
            #expect(try await relay.channel(alice, id)["first_seq"].int == 1)
        }
    }

    /// With `retention.maxEvents`, the log keeps the newest events; seq goes on, and history
    /// says where the log begins and has nothing below it.
    @Test func retentionByCountTrimsTheLogAndSeqGoesOn() async throws {
        let configure: RelayConfigurator = { $0.retention.maxEvents = 5 }
        try await withRelay(configure) { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            for index in 0..<11 { try await relay.send(alice, id, "m\(index)") }
            #expect(try await redisCLI(["XLEN", "ch:{\(id)}:log"]) == ["5"])
            let channel = try await relay.channel(alice, id)
            #expect(channel["last_seq"].int == 12)
            #expect(channel["first_seq"].int == 8, "\(channel)")
            let latest = try await relay.request("GET", "/channels/\(id)/messages?limit=50", token: relay.token(alice))
            #expect(latest.value["messages"].array?.compactMap { $0["seq"].int } == [8, 9, 10, 11, 12], "\(latest)")
            #expect(latest.value["has_more"].bool == false)
            #expect(latest.value["first_seq"].int == 8)
            let below = try await relay.history(alice, id, "before=8")
            #expect(below.events.isEmpty && !below.hasMore)
            let older = try await relay.history(alice, id, "before=10&limit=1")
            #expect(older.events.compactMap { $0["seq"].int } == [9] && older.hasMore)
            let oldest = try await relay.history(alice, id, "before=9&limit=1")
            #expect(oldest.events.compactMap { $0["seq"].int } == [8] && !oldest.hasMore, "nothing more below first_seq")
            let next = try await relay.send(alice, id, "after trimming")
            #expect(next["seq"].int == 13)
        }
    }

    // MARK: A Redis that lost a key

    /// A channel whose seq key vanished (an evicting Redis) goes on from its log: no seq reused,
    /// no 500.
    @Test func aLostSeqKeyIsRestoredFromTheLog() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            try await relay.send(alice, id, "one")
            _ = try await redisCLI(["DEL", "ch:{\(id)}:seq"])
            let next = try await relay.send(alice, id, "two")
            #expect(next["seq"].int == 3)
            #expect(try await relay.allEvents(alice, id).compactMap { $0["seq"].int } == [1, 2, 3])
        }
    }
}
