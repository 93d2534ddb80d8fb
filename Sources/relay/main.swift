import ArgumentParser
import Foundation
import Logging
import Relay

@main
struct RelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "A realtime chat relay: channels with a gap-free order, durable in Redis, live over WebSocket.",
        subcommands: [Serve.self, Token.self]
    )
}

/// `relay serve`: flags first, then the environment, then the defaults.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the relay.",
        discussion: "Each flag has an environment variable; the flag wins. LOG_LEVEL sets the log level (default info)."
    )

    @Option(help: "Address to listen on (env RELAY_HOST; default 127.0.0.1).") var host: String?
    @Option(help: "Port to listen on, 0 for any free one (env RELAY_PORT; default 8080).") var port: Int?
    @Option(
        help:
            "Redis URL, redis://[:password@]host:port[/db], or a comma-separated list of a cluster's nodes (env REDIS_URL; default redis://127.0.0.1:6379)."
    )
    var redis: String?
    @Option(
        name: .customLong("redis-wait"),
        help: "Replicas that must hold a write before it is acknowledged (env RELAY_REDIS_WAIT; default 0)."
    )
    var redisWait: Int?
    @Option(
        name: .customLong("redis-wait-ms"),
        help: "How long to wait for them, in ms; past it the write is answered unavailable (env RELAY_REDIS_WAIT_MS; default 1000)."
    )
    var redisWaitMS: Int?
    @Option(name: .customLong("jwt-secret"), help: "HS256 secret for tokens (env RELAY_JWT_SECRET).") var jwtSecret: String?
    @Flag(help: "Dev mode: a random secret if none is given, and POST /auth/dev-token (env RELAY_DEV=1).") var dev = false
    @Option(help: "Seconds between WebSocket pings (env RELAY_HEARTBEAT_S; default 30).") var heartbeat: Int?
    @Option(
        help:
            "Seconds a stopping relay goes on serving REST, /healthz answering 503, before it stops accepting; a second signal cuts it short (env RELAY_DRAIN_S; default 3)."
    )
    var drain: Int?
    @Option(help: "Largest message text, in UTF-8 bytes (env RELAY_MAX_TEXT_BYTES; default 16384).") var maxTextBytes: Int?
    @Option(help: "Largest request body or WebSocket frame, in bytes (env RELAY_MAX_BODY_BYTES; default 65536).")
    var maxBodyBytes: Int?
    @Option(help: "Most members in a group (env RELAY_MAX_GROUP_MEMBERS; default 100000).") var maxGroupMembers: Int?
    @Option(
        help:
            "Bytes the relay may owe one WebSocket before it counts as too slow and is closed with 4008 (env RELAY_MAX_QUEUED_BYTES; default 1048576)."
    )
    var maxQueuedBytes: Int?
    @Option(
        help:
            "Writes a user may make a second through this relay: REST POST, PATCH and DELETE, WebSocket send and read; over it, rate_limited (env RELAY_RATE_LIMIT; default 0, no limit)."
    )
    var rateLimit: Int?
    @Option(help: "Days a channel keeps its events; older ones are trimmed as new ones come (env RELAY_RETENTION_DAYS; 0 = forever).")
    var retentionDays: Int?
    @Option(help: "Events a channel keeps at most, the newest (env RELAY_RETENTION_EVENTS; 0 = no cap).")
    var retentionEvents: Int?

    /// The allowed range of each numeric option, by flag name: nothing later can overflow.
    static let limitRanges: [String: ClosedRange<Int>] = [
        "max-text-bytes": 1...(1 << 24), "max-body-bytes": 1024...(1 << 26), "max-group-members": 2...10_000_000,
        "max-queued-bytes": 65536...(1 << 30), "heartbeat": 1...86_400, "drain": 0...3600,
        "retention-days": RelayRetention.maxAgeDaysRange, "retention-events": RelayRetention.maxEventsRange,
        "redis-wait": 0...64, "redis-wait-ms": 1...60_000, "rate-limit": 0...1_000_000,
    ]

    func validate() throws {
        if let port, !(0...65535).contains(port) { throw ValidationError("--port must be from 0 to 65535, not \(port)") }
        let limits = [
            ("max-text-bytes", maxTextBytes), ("max-body-bytes", maxBodyBytes), ("max-group-members", maxGroupMembers),
            ("max-queued-bytes", maxQueuedBytes), ("heartbeat", heartbeat), ("drain", drain), ("retention-days", retentionDays),
            ("retention-events", retentionEvents), ("redis-wait", redisWait), ("redis-wait-ms", redisWaitMS),
            ("rate-limit", rateLimit),
        ]
        for case (let name, let value?) in limits {
            let range = Self.limitRanges[name]!
            guard range.contains(value) else {
                throw ValidationError("--\(name) must be from \(range.lowerBound) to \(range.upperBound), not \(value)")
            }
        }
    }

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let dev = self.dev || flag(environment, "RELAY_DEV")
        let secret: [UInt8]
        if let text = self.jwtSecret ?? environment["RELAY_JWT_SECRET"], !text.isEmpty {
            secret = Array(text.utf8)
            guard secret.count >= HS256.minimumSecretBytes else {
                fail(
                    "relay: the JWT secret is \(secret.count) bytes; it must be at least \(HS256.minimumSecretBytes) (a short one is guessed offline)"
                )
            }
        } else if dev {
            secret = HS256.randomSecret()
        } else {
            fail("relay: no JWT secret: pass --jwt-secret or set RELAY_JWT_SECRET (or run with --dev)")
        }
        var configuration = RelayConfiguration(jwtSecret: secret)
        configuration.devMode = dev
        configuration.host = self.host ?? environment["RELAY_HOST"] ?? configuration.host
        configuration.port = try self.port ?? integer(environment, "RELAY_PORT", in: 0...65535) ?? configuration.port
        configuration.redisURL = self.redis ?? environment["REDIS_URL"] ?? configuration.redisURL
        configuration.redisWait =
            try self.redisWait ?? integer(environment, "RELAY_REDIS_WAIT", in: Self.limitRanges["redis-wait"]!) ?? configuration.redisWait
        if let milliseconds = try self.redisWaitMS ?? integer(environment, "RELAY_REDIS_WAIT_MS", in: Self.limitRanges["redis-wait-ms"]!) {
            configuration.redisWaitTimeout = .milliseconds(milliseconds)
        }
        let heartbeat = try self.heartbeat ?? integer(environment, "RELAY_HEARTBEAT_S", in: Self.limitRanges["heartbeat"]!) ?? 30
        configuration.heartbeat = .seconds(heartbeat)
        configuration.drain = .seconds(try self.drain ?? integer(environment, "RELAY_DRAIN_S", in: Self.limitRanges["drain"]!) ?? 3)
        configuration.limits.maxTextBytes =
            try self.maxTextBytes ?? integer(environment, "RELAY_MAX_TEXT_BYTES", in: Self.limitRanges["max-text-bytes"]!)
            ?? configuration.limits.maxTextBytes
        configuration.limits.maxBodyBytes =
            try self.maxBodyBytes ?? integer(environment, "RELAY_MAX_BODY_BYTES", in: Self.limitRanges["max-body-bytes"]!)
            ?? configuration.limits.maxBodyBytes
        configuration.limits.maxGroupMembers =
            try self.maxGroupMembers ?? integer(environment, "RELAY_MAX_GROUP_MEMBERS", in: Self.limitRanges["max-group-members"]!)
            ?? configuration.limits.maxGroupMembers
        configuration.limits.maxQueuedBytes =
            try self.maxQueuedBytes ?? integer(environment, "RELAY_MAX_QUEUED_BYTES", in: Self.limitRanges["max-queued-bytes"]!)
            ?? configuration.limits.maxQueuedBytes
        configuration.limits.writesPerSecond =
            try self.rateLimit ?? integer(environment, "RELAY_RATE_LIMIT", in: Self.limitRanges["rate-limit"]!)
            ?? configuration.limits.writesPerSecond
        configuration.retention.maxAgeDays =
            try self.retentionDays ?? integer(environment, "RELAY_RETENTION_DAYS", in: RelayRetention.maxAgeDaysRange) ?? 0
        configuration.retention.maxEvents =
            try self.retentionEvents ?? integer(environment, "RELAY_RETENTION_EVENTS", in: RelayRetention.maxEventsRange) ?? 0

        var logger = Logger(label: "relay")
        logger.logLevel = .info
        if let text = environment["LOG_LEVEL"], !text.isEmpty {
            guard let level = Logger.Level(rawValue: text.lowercased()) else {
                let levels = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
                fail("relay: LOG_LEVEL=\(text) is not a log level (\(levels))")
            }
            logger.logLevel = level
        }
        do {
            try await RelayServer.checkRedis(url: configuration.redisURL, logger: logger)
            try await RelayServer.run(configuration: configuration, logger: logger)
        } catch let error as RelayConfigurationError {
            fail("relay: \(error.message)")
        }
    }
}

/// `relay token USER_ID`: prints a token signed with the configured secret.
struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print an HS256 JWT for a user, signed with the configured secret.")

    @Argument(help: "The user id (the token's sub).") var userID: String
    @Option(help: "Session (device) id, the token's sid.") var session: String = "default"
    @Option(help: "Seconds until the token expires (1 to 315360000, ten years).") var ttl: Int = 3600
    @Option(name: .customLong("jwt-secret"), help: "HS256 secret (env RELAY_JWT_SECRET).") var jwtSecret: String?

    func validate() throws {
        guard RelayIdentifier.isValid(self.userID) else {
            throw ValidationError("USER_ID: 1 to 64 characters of A-Z a-z 0-9 . _ -, other than . and ..")
        }
        guard RelayIdentifier.isValid(self.session) else {
            throw ValidationError("--session: 1 to 64 characters of A-Z a-z 0-9 . _ -, other than . and ..")
        }
        guard (1...315_360_000).contains(self.ttl) else {
            throw ValidationError("--ttl must be from 1 to 315360000 seconds, not \(self.ttl)")
        }
    }

    func run() throws {
        guard let secret = self.jwtSecret ?? ProcessInfo.processInfo.environment["RELAY_JWT_SECRET"], !secret.isEmpty else {
            fail("relay: no JWT secret: pass --jwt-secret or set RELAY_JWT_SECRET")
        }
        guard secret.utf8.count >= HS256.minimumSecretBytes else {
            fail("relay: the JWT secret is \(secret.utf8.count) bytes; it must be at least \(HS256.minimumSecretBytes)")
        }
        let expiresAt = Int64(Date().timeIntervalSince1970) + Int64(self.ttl)
        print(HS256(secret: Array(secret.utf8)).sign(JWTClaims(userID: self.userID, sessionID: self.session, expiresAt: expiresAt)))
    }
}

/// An environment variable that is on (`1`, `true`, `yes`) or off (`0`, `false`, `no`, unset or empty).
private func flag(_ environment: [String: String], _ name: String) -> Bool {
    guard let text = environment[name], !text.isEmpty else { return false }
    switch text.lowercased() {
    case "1", "true", "yes": return true
    case "0", "false", "no": return false
    default: fail("relay: \(name)=\(text) is neither on (1, true, yes) nor off (0, false, no)")
    }
}

/// An environment variable that must be a whole number in `range`, if set.
private func integer(_ environment: [String: String], _ name: String, in range: ClosedRange<Int>) throws -> Int? {
    guard let text = environment[name], !text.isEmpty else { return nil }
    guard let value = Int(text), range.contains(value) else {
        fail("relay: \(name)=\(text) is not a whole number from \(range.lowerBound) to \(range.upperBound)")
    }
    return value
}

/// Prints one line on stderr and exits with status 1.
private func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(1)
}
