import Foundation
import Relay
import TestSupport
import Testing

/// Every route that needs a token, with a body that would be valid.
private var authenticatedRoutes: [(method: String, path: String, body: [String: Any]?)] {
    [
        ("GET", "/channels", nil),
        ("POST", "/channels", ["type": "group", "members": []]),
        ("GET", "/channels/c1", nil),
        ("POST", "/channels/c1/members", ["user_id": "bob"]),
        ("DELETE", "/channels/c1/members/bob", nil),
        ("POST", "/channels/c1/messages", ["client_msg_id": "m1", "text": "hi"]),
        ("GET", "/channels/c1/messages", nil),
        ("PATCH", "/channels/c1/messages/m1", ["text": "hi"]),
        ("DELETE", "/channels/c1/messages/m1", nil),
        ("POST", "/channels/c1/read", ["seq": 1]),
        ("GET", "/presence?user_ids=alice", nil),
    ]
}

@Suite("Authentication", .timeLimit(.minutes(3)))
struct AuthTests {
    @Test func everyAPIRouteRefusesARequestWithoutToken() async throws {
        try await withRelay { relay in
            for route in authenticatedRoutes {
                let response = try await relay.request(route.method, route.path, json: route.body)
                expectError(response, 401, "unauthorized")
            }
        }
    }

    @Test func everyAPIRouteRefusesATokenSignedWithAnotherSecret() async throws {
        try await withRelay { relay in
            let forged = HS256(secret: randomBytes(32)).sign(JWTClaims(userID: "alice", expiresAt: unixNow() + 3600))
            for route in authenticatedRoutes {
                let response = try await relay.request(route.method, route.path, token: forged, json: route.body)
                expectError(response, 401, "unauthorized")
            }
        }
    }

    @Test func aValidTokenIsAccepted() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let response = try await relay.request("GET", "/channels", token: relay.token(alice))
            #expect(response.status == 200, "\(response)")
            #expect(response.value == .object(["channels": .array([])]), "\(response)")
            #expect(response.headers["content-type"]?.hasPrefix("application/json") == true, "\(response.headers)")
        }
    }

    @Test(arguments: [
        "", "Bearer", "Bearer ", "bearer-token", "Basic YWxpY2U6c2VjcmV0", "Bearer not-a-jwt", "Bearer a.b.c",
        "Bearer a.b", "Bearer ...",
    ])
    func malformedAuthorizationHeaderIs401(_ header: String) async throws {
        try await withRelay { relay in
            let response = try await relay.request("GET", "/channels", headers: ["Authorization": header])
            expectError(response, 401, "unauthorized")
        }
    }

    @Test func tokenWithoutSchemeIsRefusedEvenIfValid() async throws {
        try await withRelay { relay in
            let token = relay.token(TestRedis.uniqueName("alice"))
            let response = try await relay.request("GET", "/channels", headers: ["Authorization": token])
            expectError(response, 401, "unauthorized")
        }
    }

    @Test func algNoneIsRefused() async throws {
        try await withRelay { relay in
            let payload = #"{"sub":"alice","exp":\#(unixNow() + 3600)}"#
            let unsigned = ForgedToken.make(header: #"{"alg":"none","typ":"JWT"}"#, payload: payload, secret: nil)
            expectError(try await relay.request("GET", "/channels", token: unsigned), 401, "unauthorized")
            // `none` in the header over a signature that is valid for the relay's secret.
            let signed = ForgedToken.make(header: #"{"alg":"none","typ":"JWT"}"#, payload: payload, secret: relay.secret)
            expectError(try await relay.request("GET", "/channels", token: signed), 401, "unauthorized")
            // Other algorithms, correctly HMAC-signed with the secret, are refused too.
            let hs512 = ForgedToken.make(header: #"{"alg":"HS512","typ":"JWT"}"#, payload: payload, secret: relay.secret)
            expectError(try await relay.request("GET", "/channels", token: hs512), 401, "unauthorized")
            // The same payload with the right header is accepted: the refusals above are about `alg`.
            let good = ForgedToken.make(header: #"{"alg":"HS256","typ":"JWT"}"#, payload: payload, secret: relay.secret)
            #expect(try await relay.request("GET", "/channels", token: good).status == 200)
        }
    }

    @Test func expiredTokenIsRefused() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            expectError(try await relay.request("GET", "/channels", token: relay.token(alice, ttl: -10)), 401, "unauthorized")
            expectError(try await relay.request("GET", "/channels", token: relay.token(alice, ttl: -3600 * 24)), 401, "unauthorized")
            #expect(try await relay.request("GET", "/channels", token: relay.token(alice, ttl: 60)).status == 200)
        }
    }

    @Test func tokenWithMissingOrBadClaimsIsRefused() async throws {
        try await withRelay { relay in
            let header = #"{"alg":"HS256","typ":"JWT"}"#
            let exp = unixNow() + 3600
            let payloads = [
                #"{"exp":\#(exp)}"#,  // no sub
                #"{"sub":"alice"}"#,  // no exp
                #"{"sub":"alice","exp":"\#(exp)"}"#,  // exp a string
                #"{"sub":"bad user","exp":\#(exp)}"#,  // sub outside the id charset
                #"{"sub":"","exp":\#(exp)}"#,  // empty sub
                #"{"sub":"\#(String(repeating: "u", count: 65))","exp":\#(exp)}"#,  // sub too long
                #"{"sub":"alice/x","exp":\#(exp)}"#,
                #"{"sub":42,"exp":\#(exp)}"#,
                #"{"sub":"alice","sid":"bad sid","exp":\#(exp)}"#,
            ]
            for payload in payloads {
                let token = ForgedToken.make(header: header, payload: payload, secret: relay.secret)
                let response = try await relay.request("GET", "/channels", token: token)
                #expect(response.status == 401, "payload \(payload): \(response)")
                #expect(response.errorCode == "unauthorized", "payload \(payload): \(response)")
            }
            let badSub = HS256(secret: relay.secret).sign(JWTClaims(userID: "not valid!", expiresAt: exp))
            expectError(try await relay.request("GET", "/channels", token: badSub), 401, "unauthorized")
        }
    }

    @Test func tamperedPayloadIsRefused() async throws {
        try await withRelay { relay in
            let token = relay.token(TestRedis.uniqueName("alice"))
            let parts = token.split(separator: ".").map(String.init)
            let otherPayload = ForgedToken.base64URL(Array(#"{"sub":"mallory","exp":\#(unixNow() + 3600)}"#.utf8))
            let tampered = [parts[0], otherPayload, parts[2]].joined(separator: ".")
            expectError(try await relay.request("GET", "/channels", token: tampered), 401, "unauthorized")
        }
    }

    @Test func healthzAndMetricsNeedNoToken() async throws {
        try await withRelay { relay in
            let health = try await relay.request("GET", "/healthz")
            #expect(health.status == 200, "\(health)")
            // Touch an API route first so that request metrics exist.
            _ = try await relay.request("GET", "/channels", token: relay.token(TestRedis.uniqueName("alice")))
            let metrics = try await relay.request("GET", "/metrics")
            #expect(metrics.status == 200, "\(metrics)")
            #expect(metrics.text.contains("# TYPE "), "\(metrics)")
            #expect(metrics.headers["content-type"]?.hasPrefix("text/plain") == true, "\(metrics.headers)")
        }
    }

    /// `HEAD` answers as `GET` does, with no body: a load balancer's health check may use either.
    @Test func headAnswersAsGetWithNoBody() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            for (path, token) in [("/healthz", nil), ("/metrics", nil), ("/channels", relay.token(alice))] {
                let get = try await relay.request("GET", path, token: token)
                let head = try await relay.request("HEAD", path, token: token)
                #expect(get.status == 200, "\(get)")
                #expect(head.status == get.status, "\(head)")
                #expect(head.body.isEmpty, "\(head)")
                #expect(head.headers["content-type"] == get.headers["content-type"], "\(head.headers)")
            }
            #expect(try await relay.request("HEAD", "/channels").status == 401)
        }
    }

    @Test func devTokenIsNotFoundWithoutDevMode() async throws {
        try await withRelay { relay in
            let response = try await relay.request("POST", "/auth/dev-token", json: ["user_id": TestRedis.uniqueName("alice")])
            expectError(response, 404, "not_found")
            #expect(response.value["token"] == nil)
        }
    }

    @Test func devTokenInDevModeIsAValidTokenForTheUserAndSession() async throws {
        let devMode: (inout RelayConfiguration) -> Void = { $0.devMode = true }
        try await withRelay(devMode) { relay in
            let alice = TestRedis.uniqueName("alice")
            let response = try await relay.request("POST", "/auth/dev-token", json: ["user_id": alice, "session_id": "laptop"])
            #expect(response.status == 200, "\(response)")
            let token = try #require(response.value["token"].string, "\(response)")
            let claims = try HS256(secret: relay.secret).verify(token, now: unixNow())
            #expect(claims.userID == alice)
            #expect(claims.sessionID == "laptop")
            #expect(claims.expiresAt > unixNow())

            let channels = try await relay.request("GET", "/channels", token: token)
            #expect(channels.status == 200, "\(channels)")

            // Without a session id: the default session.
            let plain = try await relay.request("POST", "/auth/dev-token", json: ["user_id": alice])
            let plainToken = try #require(plain.value["token"].string, "\(plain)")
            #expect(try HS256(secret: relay.secret).verify(plainToken, now: unixNow()).sessionID == "default")
        }
    }

    @Test func devTokenRefusesBadInput() async throws {
        let devMode: (inout RelayConfiguration) -> Void = { $0.devMode = true }
        try await withRelay(devMode) { relay in
            expectError(try await relay.request("POST", "/auth/dev-token", json: ["user_id": "bad user"]), 400, "bad_request")
            expectError(try await relay.request("POST", "/auth/dev-token", json: [String: Any]()), 400, "bad_request")
            expectError(
                try await relay.request("POST", "/auth/dev-token", json: ["user_id": String(repeating: "a", count: 65)]),
                400,
                "bad_request"
            )
            expectError(
                try await relay.request("POST", "/auth/dev-token", json: ["user_id": "alice", "session_id": "bad/session"]),
                400,
                "bad_request"
            )
            expectError(try await relay.request("POST", "/auth/dev-token", rawBody: Array("{not json".utf8)), 400, "bad_request")
        }
    }

    @Test func unknownAPIPathIsNotFoundWithErrorBody() async throws {
        try await withRelay { relay in
            let token = relay.token(TestRedis.uniqueName("alice"))
            for (method, path) in [
                ("GET", "/channels/c1/nope"), ("POST", "/channels/c1/messages/m1/reactions"), ("GET", "/presence/alice"),
                ("POST", "/auth/nope"),
            ] {
                let response = try await relay.request(method, path, token: token)
                expectError(response, 404, "not_found")
            }
        }
    }
}
