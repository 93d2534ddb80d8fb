import COpenSSL
import Foundation
import Hummingbird
import Logging
import NIOCore
import Relay
import TestSupport
import Testing

/// Changes a test relay's configuration before it starts.
typealias RelayConfigurator = (inout RelayConfiguration) -> Void

/// Runs a relay, built by `RelayServer.makeApplication`, on `127.0.0.1` and a port the system picks,
/// with a fresh random 32-byte secret; calls `body` with a client for it once it listens, then
/// stops it.
///
/// The relay runs in a child task of a task group and is stopped by cancelling that task.
/// - Parameters:
///   - configure: changes to the configuration (limits, dev mode, …) before the relay is built;
///     `host`, `port` and `redisURL` are set before it is called.
///   - redisURL: the Redis the relay uses; by default the suite's shared server.
/// - Throws: `TestFailure` if the relay stops or is not listening within 30 seconds, and
///   whatever `body` throws.
func withRelay(
    _ configure: RelayConfigurator = { _ in },
    redisURL: String = TestRedis.url,
    _ body: (RelayTestClient) async throws -> Void
) async throws {
    var configuration = RelayConfiguration(jwtSecret: randomBytes(32))
    configuration.host = "127.0.0.1"
    configuration.port = 0
    configuration.redisURL = redisURL
    configure(&configuration)

    var logger = Logger(label: "relay-test")
    logger.logLevel = ProcessInfo.processInfo.environment["RELAY_TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .critical

    let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
    let app = try RelayServer.makeApplication(configuration: configuration, logger: logger) { channel in
        portContinuation.yield(channel.localAddress?.port ?? 0)
        portContinuation.finish()
    }
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
            defer { portContinuation.finish() }
            try await app.run()
        }
        group.addTask {
            try? await Task.sleep(for: .seconds(30))
            portContinuation.finish()
        }
        defer { group.cancelAll() }
        var port = 0
        for await reported in ports {
            port = reported
            break
        }
        guard port > 0 else {
            group.cancelAll()
            try await group.waitForAll()
            throw TestFailure("the relay did not start listening within 30 s")
        }
        let client = RelayTestClient(port: port, secret: configuration.jwtSecret)
        try await body(client)
    }
}

/// A client for one running relay: tokens signed with its secret, and HTTP requests to it.
struct RelayTestClient: Sendable {
    let host = "127.0.0.1"
    let port: Int
    /// The relay's HS256 secret.
    let secret: [UInt8]
    /// How long one request may take before it fails the test (it never hangs).
    var requestTimeout: Duration = .seconds(30)

    var baseURL: String { "http://\(host):\(port)" }

    /// A valid token for `user` (its `sid` is `session`), expiring `ttl` seconds from now
    /// (negative: already expired).
    func token(_ user: String, session: String = "default", ttl: Int64 = 3600) -> String {
        HS256(secret: secret).sign(JWTClaims(userID: user, sessionID: session, expiresAt: unixNow() + ttl))
    }

    /// Sends one request and returns the response, whatever its status.
    ///
    /// - Parameters:
    ///   - path: the path and query, already percent-encoded.
    ///   - token: sent as `Authorization: Bearer <token>`.
    ///   - json: a JSON body (anything `JSONSerialization` writes, fragments included), sent with
    ///     `Content-Type: application/json`.
    ///   - rawBody: the body's exact bytes (wins over `json`); gets `Content-Type: application/json`
    ///     unless `headers` say otherwise.
    ///   - headers: extra headers; they win over the ones above.
    /// - Throws: if no complete response arrives within ``requestTimeout``.
    func request(
        _ method: String,
        _ path: String,
        token: String? = nil,
        json: Any? = nil,
        rawBody: [UInt8]? = nil,
        headers: [String: String] = [:],
        timeout: Duration? = nil
    ) async throws -> TestResponse {
        var body = rawBody
        if body == nil, let json {
            body = Array(try JSONSerialization.data(withJSONObject: json, options: [.fragmentsAllowed]))
        }
        var allHeaders: [String: String] = [:]
        if let token { allHeaders["Authorization"] = "Bearer \(token)" }
        if body != nil { allHeaders["Content-Type"] = "application/json" }
        for (name, value) in headers {
            for existing in allHeaders.keys where existing.lowercased() == name.lowercased() {
                allHeaders[existing] = nil
            }
            allHeaders[name] = value
        }
        let message = HTTPExchange.message(method: method, path: path, port: port, headers: allHeaders, body: body)
        do {
            let response = try await HTTPExchange.perform(port: port, request: message, timeout: timeout ?? requestTimeout)
            return TestResponse(method: method, path: path, status: response.status, headers: response.headers, body: response.body)
        } catch let failure as HTTPExchange.Failure {
            throw TestFailure("\(method) \(path): \(failure.description)")
        }
    }
}

/// One HTTP response from the relay.
struct TestResponse: Sendable, CustomStringConvertible {
    /// The request it answers, for failure messages.
    var method: String
    var path: String
    var status: Int
    /// Header names lowercased.
    var headers: [String: String]
    var body: [UInt8]

    /// The body as `JSONSerialization` parses it, `nil` if it is not JSON.
    var json: Any? { try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed]) }
    /// The body if it is a JSON object.
    var object: [String: Any]? { json as? [String: Any] }
    /// The body as a typed JSON value, `nil` if it is not JSON.
    var value: JSON? { JSON(parsing: body) }
    /// The body as UTF-8 text.
    var text: String { String(decoding: body, as: UTF8.self) }
    /// `error.code` of an error body.
    var errorCode: String? { value["error"]["code"].string }
    /// `error.message` of an error body.
    var errorMessage: String? { value["error"]["message"].string }

    var description: String { "\(method) \(path) → \(status) \(text.prefix(600))" }
}

/// `count` random bytes from OpenSSL's CSPRNG.
func randomBytes(_ count: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    precondition(RAND_bytes(&bytes, Int32(count)) == 1)
    return bytes
}

/// Seconds since the epoch.
func unixNow() -> Int64 {
    Int64(Date().timeIntervalSince1970)
}

/// Milliseconds since the epoch.
func unixMillisecondsNow() -> Int {
    Int(Date().timeIntervalSince1970 * 1000)
}

/// A private `redis-server` that keeps every write (AOF, fsync always): a test may kill it and
/// start it again on the same port and files, and find everything acknowledged before.
func durableRedis() async throws -> RedisServerProcess {
    try await runOnOwnThread { try RedisServerProcess(arguments: ["--appendonly", "yes", "--appendfsync", "always"]) }
}

/// Sends `count` messages of `text` (each with its own prefix) from `user` to `channel`, four
/// at a time: a backlog to replay.
func fill(_ relay: RelayTestClient, _ user: String, _ channel: String, count: Int, text: String) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for lane in 0..<4 {
            group.addTask {
                for index in stride(from: lane, to: count, by: 4) { try await relay.send(user, channel, "\(index) \(text)") }
            }
        }
        try await group.waitForAll()
    }
}
