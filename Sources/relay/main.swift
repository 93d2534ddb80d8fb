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
    static let configuration = CommandConfiguration(abstract: "Run the relay.")

    @Option(help: "Address to listen on (env RELAY_HOST).") var host: String?
    @Option(help: "Port to listen on (env RELAY_PORT).") var port: Int?
    @Option(help: "Redis URL, redis://[:password@]host:port[/db] (env REDIS_URL).") var redis: String?
    @Option(name: .customLong("jwt-secret"), help: "HS256 secret for tokens (env RELAY_JWT_SECRET).") var jwtSecret: String?
    @Flag(help: "Dev mode: a random secret if none is given, and POST /auth/dev-token (env RELAY_DEV=1).") var dev = false
    @Option(help: "Seconds between WebSocket pings (env RELAY_HEARTBEAT_S).") var heartbeat: Int?

    func validate() throws {
        if let port, !(0...65535).contains(port) { throw ValidationError("--port must be from 0 to 65535, not \(port)") }
        if let heartbeat, heartbeat < 1 { throw ValidationError("--heartbeat must be at least 1 second, not \(heartbeat)") }
    }

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let dev = self.dev || ["1", "true", "yes"].contains(environment["RELAY_DEV"]?.lowercased() ?? "")
        let secret: [UInt8]
        if let text = self.jwtSecret ?? environment["RELAY_JWT_SECRET"], !text.isEmpty {
            secret = Array(text.utf8)
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
        let heartbeat = try self.heartbeat ?? integer(environment, "RELAY_HEARTBEAT_S", in: 1...86_400) ?? 30
        configuration.heartbeat = .seconds(heartbeat)

        var logger = Logger(label: "relay")
        logger.logLevel = Logger.Level(rawValue: environment["LOG_LEVEL"] ?? "") ?? .info
        do {
            try await RelayServer.checkRedis(url: configuration.redisURL)
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
    @Option(help: "Seconds until the token expires.") var ttl: Int = 3600
    @Option(name: .customLong("jwt-secret"), help: "HS256 secret (env RELAY_JWT_SECRET).") var jwtSecret: String?

    func validate() throws {
        guard RelayIdentifier.isValid(self.userID) else { throw ValidationError("USER_ID: 1 to 64 characters of A-Z a-z 0-9 . _ -") }
        guard RelayIdentifier.isValid(self.session) else { throw ValidationError("--session: 1 to 64 characters of A-Z a-z 0-9 . _ -") }
        guard self.ttl >= 1 else { throw ValidationError("--ttl must be at least 1 second") }
    }

    func run() throws {
        guard let secret = self.jwtSecret ?? ProcessInfo.processInfo.environment["RELAY_JWT_SECRET"], !secret.isEmpty else {
            fail("relay: no JWT secret: pass --jwt-secret or set RELAY_JWT_SECRET")
        }
        let expiresAt = Int64(Date().timeIntervalSince1970) + Int64(self.ttl)
        print(HS256(secret: Array(secret.utf8)).sign(JWTClaims(userID: self.userID, sessionID: self.session, expiresAt: expiresAt)))
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
