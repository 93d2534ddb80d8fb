import Foundation
import Relay
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A secret long enough for `relay serve` (32 bytes at least).
private let longSecret = "relay-executable-tests-secret-0123456789"

/// The lines of `text`, without a final empty line.
private func lines(_ text: String) -> [Substring] {
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
    if lines.last == "" { lines.removeLast() }
    return lines
}

/// Expects `relay` to have refused to start as the contract asks: a non-zero exit (no crash) and
/// exactly one line on stderr, which contains `text`.
private func expectRefused(
    _ result: (termination: ChildProcess.Termination, standardOutput: String, standardError: String),
    saying text: String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(result.termination != .exited(0), "\(result)", sourceLocation: sourceLocation)
    if case .signaled = result.termination { Issue.record("relay crashed: \(result)", sourceLocation: sourceLocation) }
    let errorLines = lines(result.standardError)
    #expect(errorLines.count == 1, "exactly one line: \(result.standardError.debugDescription)", sourceLocation: sourceLocation)
    #expect(errorLines.first?.contains(text) == true, "it says \(text): \(result.standardError)", sourceLocation: sourceLocation)
}

/// Polls `GET /healthz` on `port` until it answers 200 or `process` ends.
private func waitUntilServing(_ process: ChildProcess, port: Int) async throws {
    let client = RelayTestClient(port: port, secret: [0], requestTimeout: .seconds(5))
    try await waitUntil("relay serve answers /healthz on port \(port)", timeout: .seconds(60)) {
        if let status = process.exitStatus {
            throw TestFailure("relay serve ended (\(status)) before serving; stderr: \(process.standardError)")
        }
        return (try? await client.request("GET", "/healthz"))?.status == 200
    }
}

/// Starts `relay serve --dev` on a free port against the suite's Redis, with `arguments` and
/// `environment` added, and waits until it serves. (A process that is not reaped is killed when
/// it is released.)
private func startDevRelay(
    _ arguments: [String] = [],
    environment: [String: String] = [:]
) async throws -> (process: ChildProcess, client: RelayTestClient) {
    let port = try unusedPort()
    let process = try ChildProcess(
        RelayExecutable.path,
        ["serve", "--dev", "--port", "\(port)", "--redis", TestRedis.url] + arguments,
        environment: RelayExecutable.environment(environment)
    )
    try await waitUntilServing(process, port: port)
    return (process, RelayTestClient(port: port, secret: [0]))
}

/// A token for `user` from a relay in dev mode.
private func devToken(_ client: RelayTestClient, _ user: String) async throws -> String {
    let issued = try await client.request("POST", "/auth/dev-token", json: ["user_id": user])
    return try #require(issued.value["token"].string, "\(issued)")
}

@Suite("The relay executable", .timeLimit(.minutes(5)))
struct RelayExecutableTests {
    let relay = RelayExecutable.path

    init() throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: relay),
            "no relay executable at \(relay): build it first (or set RELAY_BIN)"
        )
    }

    @Test(
        .serialized,
        arguments: [
            ("--port", "notanumber"), ("--port", "70000"), ("--port", "-1"), ("--heartbeat", "soon"), ("--heartbeat", "-5"),
            ("--redis", "http://127.0.0.1:6379"), ("--redis", "not a url"), ("--max-text-bytes", "0"), ("--max-body-bytes", "ten"),
            ("--max-group-members", "1"), ("--max-queued-bytes", "1"), ("--heartbeat", "5000000000000000"),
            ("--heartbeat", "86401"), ("--retention-days", "-1"), ("--retention-days", "99999999999"),
            ("--retention-events", "9223372036854775807"), ("--max-text-bytes", "99999999999999999999"),
            ("--redis-wait", "-1"), ("--redis-wait", "65"), ("--redis-wait", "one"), ("--redis-wait-ms", "0"),
            ("--redis-wait-ms", "600001"), ("--redis", "redis://127.0.0.1:6379,http://x"), ("--drain", "-1"),
            ("--drain", "3601"), ("--rate-limit", "-1"), ("--rate-limit", "1000001"), ("--rate-limit", "fast"),
        ]
    )
    func badValueNamesTheFlagOnTheFirstLineAndExitsNonZero(_ flag: String, _ value: String) async throws {
        var options = ["--port": "\(try unusedPort())", "--jwt-secret": longSecret, "--redis": TestRedis.url]
        options[flag] = value
        let arguments = ["serve"] + options.sorted { $0.key < $1.key }.flatMap { [$0.key, $0.value] }
        let result = try await ChildProcess.run(relay, arguments, environment: RelayExecutable.environment())
        #expect(result.termination != .exited(0), "\(result)")
        if case .signaled = result.termination { Issue.record("relay serve crashed: \(result)") }
        let first = lines(result.standardError).first.map(String.init) ?? ""
        let name = flag.dropFirst(2)
        #expect(first.lowercased().contains(name), "the first line of stderr names \(flag): \(result.standardError)")
    }

    @Test func unknownFlagIsAnErrorThatNamesIt() async throws {
        let result = try await ChildProcess.run(relay, ["serve", "--no-such-flag"], environment: RelayExecutable.environment())
        #expect(result.termination != .exited(0), "\(result)")
        #expect(lines(result.standardError).first?.contains("no-such-flag") == true, "\(result.standardError)")
    }

    @Test func badPortInTheEnvironmentIsAnError() async throws {
        let environment = RelayExecutable.environment([
            "RELAY_PORT": "notanumber", "RELAY_JWT_SECRET": longSecret, "REDIS_URL": TestRedis.url,
        ])
        let result = try await ChildProcess.run(relay, ["serve"], environment: environment)
        #expect(result.termination != .exited(0), "\(result)")
        #expect(
            lines(result.standardError).first?.contains("PORT") == true || lines(result.standardError).first?.contains("port") == true,
            "\(result.standardError)"
        )
    }

    /// A setting that means nothing is an error naming it, not silently the default.
    @Test(.serialized, arguments: [("RELAY_DEV", "2"), ("LOG_LEVEL", "bogus")])
    func aSettingThatMeansNothingIsAnErrorNamingIt(_ name: String, _ value: String) async throws {
        let environment = RelayExecutable.environment([name: value, "RELAY_JWT_SECRET": longSecret, "REDIS_URL": TestRedis.url])
        let result = try await ChildProcess.run(relay, ["serve", "--port", "\(try unusedPort())"], environment: environment)
        expectRefused(result, saying: "\(name)=\(value)")
    }

    /// An address the relay cannot listen on is one line naming the flags, not a stack of NIO's.
    @Test func anAddressTheRelayCannotListenOnIsOneLineNamingTheFlags() async throws {
        // The test Redis listens on its port: the relay cannot.
        let results = [
            (
                "--port",
                try await ChildProcess.run(
                    relay,
                    ["serve", "--port", "\(TestRedis.port)", "--jwt-secret", longSecret, "--redis", TestRedis.url],
                    environment: RelayExecutable.environment()
                )
            ),
            (
                "--host",
                try await ChildProcess.run(
                    relay,
                    [
                        "serve", "--host", "no-such-host.invalid", "--port", "\(try unusedPort())", "--jwt-secret", longSecret, "--redis",
                        TestRedis.url,
                    ],
                    environment: RelayExecutable.environment(),
                    timeout: .seconds(60)
                )
            ),
        ]
        for (flag, result) in results {
            expectRefused(result, saying: flag)
        }
    }

    @Test func missingSecretIsOneLineOnStderrAndANonZeroExit() async throws {
        let port = try unusedPort()
        let result = try await ChildProcess.run(
            relay,
            ["serve", "--port", "\(port)", "--redis", TestRedis.url],
            environment: RelayExecutable.environment()
        )
        expectRefused(result, saying: "secret")
    }

    @Test func unreachableRedisAtStartIsOneLineOnStderrAndANonZeroExit() async throws {
        let deadRedis = try unusedPort()
        let result = try await ChildProcess.run(
            relay,
            ["serve", "--port", "\(try unusedPort())", "--jwt-secret", longSecret, "--redis", "redis://127.0.0.1:\(deadRedis)"],
            environment: RelayExecutable.environment(),
            timeout: .seconds(60)
        )
        expectRefused(result, saying: "unreachable")
        #expect(result.standardError.contains("connection refused"), "says why, in a few words: \(result.standardError)")
        #expect(!result.standardError.contains("SingleConnectionFailure"), "\(result.standardError)")
    }

    @Test(
        .serialized,
        arguments: [
            ("RELAY_RETENTION_DAYS", "-3"), ("RELAY_RETENTION_EVENTS", "1e9"), ("RELAY_HEARTBEAT_S", "5000000000000000"),
            ("RELAY_DRAIN_S", "soon"),
        ]
    )
    func badNumberInTheEnvironmentIsAnErrorNamingIt(_ name: String, _ value: String) async throws {
        let environment = RelayExecutable.environment([name: value, "RELAY_JWT_SECRET": longSecret, "REDIS_URL": TestRedis.url])
        let result = try await ChildProcess.run(relay, ["serve", "--port", "\(try unusedPort())"], environment: environment)
        #expect(result.termination != .exited(0), "\(result)")
        if case .signaled = result.termination { Issue.record("relay serve crashed: \(result)") }
        #expect(lines(result.standardError).first?.contains(name) == true, "\(result.standardError)")
    }

    @Test(.serialized, arguments: ["9223372036854775807", "315360001", "0", "-1"])
    func tokenTTLOutOfRangeIsAnErrorNotACrash(_ ttl: String) async throws {
        let result = try await ChildProcess.run(
            relay,
            ["token", "alice", "--ttl", ttl],
            environment: RelayExecutable.environment(["RELAY_JWT_SECRET": longSecret])
        )
        #expect(result.termination != .exited(0), "\(result)")
        if case .signaled = result.termination { Issue.record("relay token crashed: \(result)") }
        #expect(lines(result.standardError).first?.contains("ttl") == true, "\(result.standardError)")
    }

    @Test(.serialized, arguments: [true, false])
    func aSecretShorterThan32BytesIsRefused(byFlag: Bool) async throws {
        let short = String(repeating: "s", count: 31)
        let result = try await ChildProcess.run(
            relay,
            ["serve", "--port", "\(try unusedPort())", "--redis", TestRedis.url] + (byFlag ? ["--jwt-secret", short] : []),
            environment: RelayExecutable.environment(byFlag ? [:] : ["RELAY_JWT_SECRET": short])
        )
        expectRefused(result, saying: "secret")
        let token = try await ChildProcess.run(
            relay,
            ["token", "alice", "--jwt-secret", short],
            environment: RelayExecutable.environment()
        )
        #expect(token.termination != .exited(0), "relay token refuses it too: \(token)")
    }

    /// A Redis that may evict any key (a maxmemory with an allkeys-* policy) could drop a
    /// channel's seq or log: the relay refuses to start on it, in one line naming the setting.
    @Test func aRedisThatMayEvictAChannelsKeysIsRefused() async throws {
        // Started and stopped on threads of their own: both block while they wait for the server.
        let evicting = try await runOnOwnThread {
            try RedisServerProcess(arguments: ["--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"])
        }
        let result = try await ChildProcess.run(
            relay,
            ["serve", "--port", "\(try unusedPort())", "--jwt-secret", longSecret, "--redis", evicting.url],
            environment: RelayExecutable.environment()
        )
        expectRefused(result, saying: "maxmemory-policy")

        // volatile-* evicts only keys with a TTL (presence): the relay runs.
        try await runOnOwnThread { evicting.stop() }
        let volatile = try await runOnOwnThread {
            try RedisServerProcess(arguments: ["--maxmemory", "100mb", "--maxmemory-policy", "volatile-lru"])
        }
        let port = try unusedPort()
        let process = try ChildProcess(
            relay,
            ["serve", "--port", "\(port)", "--jwt-secret", longSecret, "--redis", volatile.url],
            environment: RelayExecutable.environment()
        )
        defer { process.killAndReap() }
        try await waitUntilServing(process, port: port)
        process.killAndReap()
        try await runOnOwnThread { volatile.stop() }
    }

    /// Several URLs are the seeds of a Redis Cluster. A single Redis among them would be used
    /// alone, and relays given the list in another order would keep their channels apart: the
    /// relay refuses to start, in one line naming the URL that is no cluster node.
    @Test func severalURLsOfSingleRedisServersAreRefused() async throws {
        let unreachable = "redis://127.0.0.1:\(try unusedPort())"
        let result = try await ChildProcess.run(
            relay,
            ["serve", "--port", "\(try unusedPort())", "--jwt-secret", longSecret, "--redis", "\(TestRedis.url),\(unreachable)"],
            environment: RelayExecutable.environment(),
            timeout: .seconds(60)
        )
        expectRefused(result, saying: "not a cluster node")
        #expect(result.standardError.hasPrefix("relay: --redis"), "\(result.standardError)")
    }

    /// A URL that is not one says so, and names the flag: it is not "unreachable".
    @Test(.serialized, arguments: ["http://127.0.0.1:6379", "redis://127.0.0.1:notaport", "redis://127.0.0.1:6379/x"])
    func aMalformedRedisURLIsAnErrorNamingTheFlag(_ url: String) async throws {
        let result = try await ChildProcess.run(
            relay,
            ["serve", "--port", "\(try unusedPort())", "--jwt-secret", longSecret, "--redis", url],
            environment: RelayExecutable.environment(),
            timeout: .seconds(60)
        )
        expectRefused(result, saying: "--redis")
        #expect(!result.standardError.contains("unreachable"), "\(result.standardError)")
    }

    /// The Redis password never shows: not in the unreachable-at-start line, not in a bad URL's.
    @Test(
        .serialized,
        arguments: [
            "redis://:hunter2-pw-secret@127.0.0.1:PORT", "redis://someone:hunter2-pw-secret@127.0.0.1:PORT",
            "http://:hunter2-pw-secret@127.0.0.1:PORT",
            "redis://:hunter2-pw-secret@127.0.0.1:PORT,redis://:hunter2-pw-other@127.0.0.1:PORT",
            // Malformed before the password: no `://` to find it by.
            "redis:/:hunter2-pw-secret@127.0.0.1:PORT", "redis//:hunter2-pw-secret@127.0.0.1:PORT", ":hunter2-pw-secret@127.0.0.1:PORT",
            "redis://127.0.0.1:PORT,redis:/u:hunter2-pw-secret@127.0.0.1:PORT",
        ]
    )
    func theRedisPasswordIsNeverPrinted(_ template: String) async throws {
        let url = template.replacingOccurrences(of: "PORT", with: "\(try unusedPort())")
        let result = try await ChildProcess.run(
            relay,
            ["serve", "--port", "\(try unusedPort())", "--jwt-secret", longSecret, "--redis", url],
            environment: RelayExecutable.environment(),
            timeout: .seconds(60)
        )
        #expect(result.termination != .exited(0), "\(result)")
        #expect(!result.standardError.isEmpty)
        #expect(!(result.standardError + result.standardOutput).contains("hunter2"), "\(result.standardError)")
    }

    @Test func tokenCommandPrintsATokenTheRelayAccepts() async throws {
        let secret = "relay-executable-test-\(UUID().uuidString)"
        let alice = TestRedis.uniqueName("alice")
        let environment = RelayExecutable.environment(["RELAY_JWT_SECRET": secret])
        let result = try await ChildProcess.run(relay, ["token", alice, "--ttl", "60"], environment: environment)
        #expect(result.termination == .exited(0), "\(result)")
        let token = result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(token.split(separator: ".", omittingEmptySubsequences: false).count == 3, "\(result.standardOutput.debugDescription)")

        let claims = try HS256(secret: Array(secret.utf8)).verify(token, now: unixNow())
        #expect(claims.userID == alice)
        #expect(claims.sessionID == "default")
        #expect(abs(claims.expiresAt - (unixNow() + 60)) <= 5, "expires in 60 s: \(claims.expiresAt)")

        let sameSecret: (inout RelayConfiguration) -> Void = { $0.jwtSecret = Array(secret.utf8) }
        try await withRelay(sameSecret) { client in
            let response = try await client.request("GET", "/channels", token: token)
            #expect(response.status == 200, "\(response)")
        }

        let withSession = try await ChildProcess.run(relay, ["token", alice, "--session", "phone"], environment: environment)
        #expect(withSession.termination == .exited(0), "\(withSession)")
        let sessionClaims = try HS256(secret: Array(secret.utf8))
            .verify(withSession.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines), now: unixNow())
        #expect(sessionClaims.sessionID == "phone")
        #expect(sessionClaims.userID == alice)
    }

    @Test func tokenCommandRefusesABadUserID() async throws {
        let result = try await ChildProcess.run(
            relay,
            ["token", "bad user"],
            environment: RelayExecutable.environment(["RELAY_JWT_SECRET": longSecret])
        )
        #expect(result.termination != .exited(0), "\(result)")
        #expect(!result.standardError.isEmpty)
    }

    /// `relay serve` as a process: configured from the environment with a flag winning over its
    /// variable, it serves, accepts a token from `relay token` with the same secret, and exits 0
    /// on SIGTERM.
    @Test func serveRunsWithEnvironmentAndFlagsAndExitsZeroOnSIGTERM() async throws {
        let secret = "serve-test-\(UUID().uuidString)"
        let (ignoredPort, port) = (try unusedPort(), try unusedPort())
        let environment = RelayExecutable.environment([
            "RELAY_JWT_SECRET": secret, "REDIS_URL": TestRedis.url, "RELAY_PORT": "\(ignoredPort)", "RELAY_HOST": "127.0.0.1",
        ])
        let process = try ChildProcess(relay, ["serve", "--port", "\(port)"], environment: environment)
        defer { process.killAndReap() }
        try await waitUntilServing(process, port: port)

        let alice = TestRedis.uniqueName("alice")
        let tokenResult = try await ChildProcess.run(relay, ["token", alice], environment: environment)
        let token = tokenResult.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        let client = RelayTestClient(port: port, secret: Array(secret.utf8))
        let channels = try await client.request("GET", "/channels", token: token)
        #expect(channels.status == 200, "\(channels)")
        let created = try await client.request("POST", "/channels", token: token, json: ["type": "group", "members": []])
        #expect(created.status == 201, "\(created)")
        let other = HS256(secret: randomBytes(32)).sign(JWTClaims(userID: alice, expiresAt: unixNow() + 60))
        expectError(try await client.request("GET", "/channels", token: other), 401, "unauthorized")
        expectError(try await client.request("POST", "/auth/dev-token", json: ["user_id": alice]), 404, "not_found")

        process.send(SIGTERM)
        let termination = try await process.wait(timeout: .seconds(20))
        #expect(termination == .exited(0), "stderr: \(process.standardError)")
    }

    /// The limits are configurable by flag and by environment, and enforced as configured.
    @Test func limitsFollowTheirFlagsAndVariables() async throws {
        let (process, client) = try await startDevRelay(["--max-text-bytes", "10"], environment: ["RELAY_MAX_BODY_BYTES": "2048"])
        defer { process.killAndReap() }
        let token = try await devToken(client, TestRedis.uniqueName("alice"))
        let created = try await client.request("POST", "/channels", token: token, json: ["type": "group", "members": []])
        let id = try #require(created.value["id"].string, "\(created)")
        let path = "/channels/\(id)/messages"
        let fits = try await client.request("POST", path, token: token, json: ["client_msg_id": "a", "text": "0123456789"])
        #expect(fits.status == 201, "\(fits)")
        expectError(
            try await client.request("POST", path, token: token, json: ["client_msg_id": "b", "text": "0123456789x"]),
            413,
            "too_large"
        )
        let padded = ["client_msg_id": "c", "text": "x", "padding": String(repeating: "p", count: 2100)]
        expectError(try await client.request("POST", path, token: token, json: padded), 413, "too_large")
        process.send(SIGTERM)
        #expect(try await process.wait(timeout: .seconds(20)) == .exited(0), "stderr: \(process.standardError)")
    }

    /// WebSockets that come and go leave no memory behind: the relay's resident size stays flat
    /// over rounds of 1,000 connections (each one held the channel forever while the WebSocket
    /// router's handler reference kept its context alive: about 4 KiB per connection).
    @Test func webSocketsThatComeAndGoLeaveNoMemoryBehind() async throws {
        let (process, client) = try await startDevRelay()
        defer { process.killAndReap() }
        let port = client.port
        let token = try await devToken(client, TestRedis.uniqueName("churn"))
        func residentKiB() throws -> Int {
            let status = try String(contentsOfFile: "/proc/\(process.pid)/status", encoding: .utf8)
            let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") })
            return try #require(Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]))
        }
        func churn(_ count: Int) async throws {
            try await runOnOwnThread {
                for _ in 0..<count {
                    _ = try StalledSocket.openBlocking(port: port, token: token)
                }
            }
            try await waitUntil("the relay has no socket left", timeout: .seconds(30)) {
                let text = try await client.request("GET", "/metrics").text
                return text.contains("relay_websockets 0.0")
            }
        }
        // Two rounds of warm-up (allocator arenas and caches grow to their working size), then
        // three more: together they may not grow by what a leak of a channel per connection takes.
        try await churn(1000)
        try await churn(1000)
        var sizes = [try residentKiB()]
        for _ in 0..<3 {
            try await churn(1000)
            sizes.append(try residentKiB())
        }
        let growth = sizes.last! - sizes.first!
        #expect(growth < 4500, "resident KiB after each round of 1,000 connections: \(sizes)")
        process.send(SIGTERM)
        #expect(try await process.wait(timeout: .seconds(20)) == .exited(0), "stderr: \(process.standardError)")
    }

    /// A client that keeps sending large frames and never reads its answers costs the relay a
    /// bounded amount of memory: the answers are short (an error quotes a bounded excerpt), and
    /// once they fill the socket the relay stops reading the client (or closes it with 4008).
    /// Others are served meanwhile. (The relay runs as its own process, so that its resident
    /// size is its own.)
    @Test func aClientThatSendsWithoutReadingCostsBoundedMemory() async throws {
        let (process, client) = try await startDevRelay()
        defer { process.killAndReap() }
        func residentKiB() throws -> Int {
            let status = try String(contentsOfFile: "/proc/\(process.pid)/status", encoding: .utf8)
            let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") })
            return try #require(Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]))
        }
        let socket = try await StalledSocket.open(port: client.port, token: try await devToken(client, TestRedis.uniqueName("flood")))
        let before = try residentKiB()
        // 500 frames of 60 KB with an unknown type: echoed in full, the answers would hold 30 MB.
        let frame = RawWebSocket.clientFrame(opcode: 0x1, payload: Array("{\"type\":\"\(String(repeating: "z", count: 60_000))\"}".utf8))
        let total = 500 * frame.count
        let (sent, closed) = try await runOnOwnThread { () -> (Int, Bool) in
            var sent = 0
            var stalledSince: ContinuousClock.Instant?
            let deadline = ContinuousClock.now + .seconds(120)
            while sent < total, ContinuousClock.now < deadline {
                guard let count = socket.sendWithoutBlocking(frame[(sent % frame.count)...]) else { return (sent, true) }
                if count > 0 {
                    sent += count
                    stalledSince = nil
                } else {
                    // Throttled: the relay stopped reading this client.
                    let now = ContinuousClock.now
                    if let since = stalledSince, now - since > .seconds(3) { return (sent, false) }
                    if stalledSince == nil { stalledSince = now }
                    usleep(10_000)
                }
            }
            return (sent, false)
        }
        let growth = try residentKiB() - before
        #expect(growth < 16 * 1024, "resident KiB grew by \(growth) (sent \(sent) of \(total) bytes, closed: \(closed))")
        // Someone else is served all the while.
        let other = try await TestSocket.connect(client, token: try await devToken(client, TestRedis.uniqueName("other")), label: "other")
        try await other.ping()
        other.abort()
        // What the flooding client got: short answers, each quoting at most a bounded excerpt.
        let (bytes, _) = try await socket.read(timeout: .seconds(2)) { _ in false }
        let answers = StalledSocket.frames(in: bytes).filter { $0.opcode == 0x1 }
        #expect(!answers.isEmpty)
        #expect(answers.allSatisfy { $0.payload.count < 400 }, "an answer quoted too much of its frame")
        if let code = StalledSocket.closeCode(in: bytes) { #expect(code == 4008) }
        process.send(SIGTERM)
        #expect(try await process.wait(timeout: .seconds(20)) == .exited(0), "stderr: \(process.standardError)")
    }

    /// SIGTERM: every open WebSocket gets a close frame with 1001 (going away), then the process exits 0.
    @Test func sigtermClosesWebSocketsWith1001AndExitsZero() async throws {
        let (process, client) = try await startDevRelay()
        defer { process.killAndReap() }
        var sockets: [StalledSocket] = []
        for user in ["alice", "bob"] {
            let token = try await devToken(client, TestRedis.uniqueName(user))
            let socket = try await StalledSocket.open(port: client.port, token: token, receiveBuffer: 65_536)
            let (hello, _) = try await socket.drain(timeout: .seconds(1))
            #expect(String(decoding: hello, as: UTF8.self).contains("\"type\":\"hello\""), "served before the signal")
            sockets.append(socket)
        }

        let late = try await devToken(client, TestRedis.uniqueName("late"))
        process.send(SIGTERM)
        // Draining from the signal on: a load balancer's health check fails and nobody new gets in.
        try await waitUntil("/healthz answers 503", timeout: .seconds(10)) {
            try await client.request("GET", "/healthz").status == 503
        }
        let refused = try await client.request(
            "GET",
            "/ws?token=\(late)",
            headers: [
                "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            ]
        )
        #expect(refused.status == 503, "an upgrade while draining: \(refused)")
        for socket in sockets {
            let closing = try await socket.readUntilCloseFrame(timeout: .seconds(15))
            #expect(StalledSocket.closeCode(in: closing) == 1001, "frames: \(StalledSocket.frames(in: closing).map(\.opcode))")
            // The client's answer ends the handshake: a second close frame from the server would
            // be a protocol error, which browsers report as 1006 instead of the code.
            try socket.sendClose(code: 1001)
            let (rest, ended) = try await socket.drain(timeout: .seconds(15))
            let closeFrames = StalledSocket.frames(in: closing + rest).filter { $0.opcode == 0x8 }
            #expect(closeFrames.count == 1, "close frames: \(closeFrames.map(\.payload))")
            #expect(ended)
        }
        #expect(try await process.wait(timeout: .seconds(20)) == .exited(0), "stderr: \(process.standardError)")
        // A graceful stop logs no error (a cancelled shutdown logs "Waiting on child channel: CancellationError").
        let log = process.standardOutput + process.standardError
        #expect(!log.contains(" error "), "\(log)")
        #expect(log.contains("Stopping"), "\(log)")
    }

    /// SIGTERM with no WebSocket open: the relay goes on serving REST for its drain, `/healthz`
    /// answering 503 from the signal on, so that a load balancer's health check can see it stop;
    /// then it exits 0.
    @Test func aStoppingRelayServesItsDrainWithHealthzAt503() async throws {
        let (process, client) = try await startDevRelay(["--drain", "2"])
        defer { process.killAndReap() }
        let token = try await devToken(client, TestRedis.uniqueName("drain"))
        let signalled = ContinuousClock.now
        process.send(SIGTERM)
        try await waitUntil("/healthz answers 503", timeout: .seconds(1)) {
            try await client.request("GET", "/healthz").status == 503
        }
        while ContinuousClock.now - signalled < .milliseconds(1500) {
            let health = try await client.request("GET", "/healthz")
            #expect(health.status == 503, "\(health)")
            let channels = try await client.request("GET", "/channels", token: token)
            #expect(channels.status == 200, "REST is served while draining: \(channels)")
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(try await process.wait(timeout: .seconds(20)) == .exited(0), "stderr: \(process.standardError)")
        let stopped = ContinuousClock.now - signalled
        #expect(stopped >= .milliseconds(1900) && stopped < .seconds(10), "stopped \(stopped) after the signal, with a drain of 2 s")
    }

    /// A second signal cuts the drain short.
    @Test func aSecondSignalEndsTheDrain() async throws {
        let (process, client) = try await startDevRelay(environment: ["RELAY_DRAIN_S": "600"])
        defer { process.killAndReap() }
        process.send(SIGTERM)
        try await waitUntil("/healthz answers 503", timeout: .seconds(1)) {
            try await client.request("GET", "/healthz").status == 503
        }
        process.send(SIGINT)
        #expect(try await process.wait(timeout: .seconds(10)) == .exited(0), "stderr: \(process.standardError)")
    }

    @Test(arguments: [true, false])
    func devModeServesWithoutASecretAndIssuesDevTokens(byFlag: Bool) async throws {
        let port = try unusedPort()
        let process = try ChildProcess(
            relay,
            ["serve", "--port", "\(port)", "--redis", TestRedis.url] + (byFlag ? ["--dev"] : []),
            environment: RelayExecutable.environment(byFlag ? [:] : ["RELAY_DEV": "1"])
        )
        defer { process.killAndReap() }
        try await waitUntilServing(process, port: port)
        let client = RelayTestClient(port: port, secret: [0])
        let alice = TestRedis.uniqueName("alice")
        let issued = try await client.request("POST", "/auth/dev-token", json: ["user_id": alice])
        #expect(issued.status == 200, "\(issued)")
        let token = try #require(issued.value["token"].string, "\(issued)")
        #expect(try await client.request("GET", "/channels", token: token).status == 200)
        process.send(SIGINT)
        #expect(try await process.wait(timeout: .seconds(20)) == .exited(0), "stderr: \(process.standardError)")
    }
}

/// Two relays behind HAProxy (health-checking `/healthz`, as `make cluster` sets it up): one is
/// stopped with SIGTERM while a client listens through the balancer and messages keep coming. The
/// balancer stops sending to it, its socket is closed with 1001, and the client reconnects through
/// the balancer to the other relay and resumes: it has every acknowledged message, in order, once.
@Suite("Behind a load balancer", .timeLimit(.minutes(3)))
struct LoadBalancerTests {
    @Test func aRelayStoppedBehindTheBalancerLosesNothingForItsClients() async throws {
        let haproxy = "/usr/sbin/haproxy"
        try #require(FileManager.default.isExecutableFile(atPath: haproxy), "haproxy: make test installs it")
        let secret = "load-balancer-tests-secret-0123456789"
        var relays: [(process: ChildProcess, port: Int)] = []
        defer { for relay in relays { relay.process.killAndReap() } }
        for _ in 0..<2 {
            let port = try unusedPort()
            let process = try ChildProcess(
                RelayExecutable.path,
                ["serve", "--port", "\(port)", "--redis", TestRedis.url, "--jwt-secret", secret],
                environment: RelayExecutable.environment()
            )
            try await waitUntilServing(process, port: port)
            relays.append((process, port))
        }
        let front = try unusedPort()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("relay-lb-\(front)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // The configuration `make cluster` runs HAProxy with, with faster health checks.
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/cluster.sh").path
        let generated = try await ChildProcess.run(
            "/bin/bash",
            [script, "haproxy-config", "\(front)", "\(relays[0].port)", "\(relays[1].port)"],
            environment: RelayExecutable.environment(["HAPROXY_CHECK": "inter 200ms fall 1 rise 2"])
        )
        try #require(generated.termination == .exited(0), "scripts/cluster.sh haproxy-config: \(generated)")
        let configuration = generated.standardOutput
        let file = directory.appendingPathComponent("haproxy.cfg")
        try configuration.write(to: file, atomically: true, encoding: .utf8)
        let balancer = try ChildProcess(haproxy, ["-db", "-f", file.path], environment: RelayExecutable.environment())
        defer { balancer.killAndReap() }

        let client = RelayTestClient(port: front, secret: Array(secret.utf8), requestTimeout: .seconds(10))
        let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
        try await waitUntil("HAProxy passes requests to the relays", timeout: .seconds(30)) {
            if let status = balancer.exitStatus { throw TestFailure("haproxy ended (\(status)): \(balancer.standardError)") }
            return (try? await client.request("GET", "/channels", token: client.token(alice)))?.status == 200
        }
        let id = try await client.createGroup(alice, members: [bob])

        // Bob listens through the balancer; find the relay he landed on.
        let socket = try await TestSocket.connect(client, token: client.token(bob), label: "bob")
        defer { socket.abort() }
        var stopped: Int?
        try await waitUntil("bob's relay is known", timeout: .seconds(10)) {
            for (index, relay) in relays.enumerated() {
                let metrics = try await RelayTestClient(port: relay.port, secret: []).request("GET", "/metrics").text
                if metrics.contains("relay_websockets 1.0") { stopped = index }
            }
            return stopped != nil
        }
        let index = try #require(stopped)

        // Alice sends through the balancer all along, retrying what is refused (a 503 while a
        // relay stops): every message she has an answer for must reach bob.
        let sender = Task { () -> [Int] in
            var acknowledged: [Int] = []
            for message in 0..<60 {
                let clientMessageID = "lb-\(message)"
                for _ in 0..<50 {
                    let response = try? await client.request(
                        "POST",
                        "/channels/\(id)/messages",
                        token: client.token(alice),
                        json: ["client_msg_id": clientMessageID, "text": "m\(message)"]
                    )
                    if let response, response.status == 201 || response.status == 200, let seq = response.value["message"]["seq"].int {
                        acknowledged.append(seq)
                        break
                    }
                    try await Task.sleep(for: .milliseconds(100))
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            return acknowledged
        }
        try await Task.sleep(for: .milliseconds(400))
        relays[index].process.send(SIGTERM)
        let code = try await socket.waitForClose(timeout: .seconds(20))
        #expect(code == 1001, "the stopping relay says it is going away")
        #expect(try await relays[index].process.wait(timeout: .seconds(20)) == .exited(0))
        let lastSeen = socket.seqs(id).last ?? 0

        // Reconnect through the balancer (only the other relay is left) and resume.
        // As a client does, it retries the reconnect a few times.
        var reconnected: TestSocket?
        for attempt in 1...20 where reconnected == nil {
            do {
                reconnected = try await TestSocket.connect(client, token: client.token(bob), label: "bob again")
            } catch  where attempt < 20 {
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        let again = try #require(reconnected)
        defer { again.abort() }
        let start = again.frames.count
        try await again.send(json: ["type": "resume", "cursors": [id: lastSeen]])
        _ = try await again.waitFor("resumed", from: start) { $0["type"].string == "resumed" }
        let acknowledged = try await sender.value
        #expect(acknowledged.count == 60, "every message was acknowledged in the end: \(acknowledged.count)")
        let top = try #require(acknowledged.max())
        try await again.waitUntil("seq \(top)", timeout: .seconds(20)) { frames in
            frames.contains { $0["channel_id"].string == id && $0["seq"].int == top }
        }
        // The first socket: gap-free and in order up to the 1001.
        let before = socket.seqs(id)
        expectSeqs(before, Array((before.first ?? 1)...max(lastSeen, before.first ?? 1)), "bob's first socket")
        // The second one may push live events before the resume is read (the client de-duplicates);
        // from the resume on it replays everything after `lastSeen`, then goes on live, in order.
        let after = again.seqs(id)
        let replayStart = try #require(after.lastIndex(of: lastSeen + 1), "the resume replays from \(lastSeen + 1): \(after)")
        expectSeqs(Array(after[replayStart...]), Array((lastSeen + 1)...top), "bob's second socket, from the resume")
        expectSeqs(Array(after[..<replayStart]), after[..<replayStart].sorted(), "live events before the resume")
        let received = Set(before + after)
        #expect(Set(acknowledged).isSubset(of: received), "every acknowledged message reached bob")
        #expect(received == Set((before.first ?? 1)...top), "nothing lost, nothing invented: \(received.sorted())")
    }
}
