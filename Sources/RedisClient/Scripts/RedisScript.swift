/// A Lua script, run with `EVALSHA` under its SHA-1 and loaded again whenever Redis has lost it.
public struct RedisScript: Sendable, Hashable {
    public let source: String
    public let sha1: String

    public init(_ source: String) {
        self.source = source
        self.sha1 = SHA1.hexDigest(source.utf8)
    }
}

extension RedisClient {
    /// Runs a script with `EVALSHA`; on `NOSCRIPT` (after a restart or `SCRIPT FLUSH`) loads it
    /// and runs it again, which is safe because a script that was not found did not run.
    ///
    /// - Throws: ``RedisError``; a script's `redis.error_reply` arrives as `.serverError`.
    @discardableResult
    public func run(_ script: RedisScript, keys: [String], arguments: [any RedisArgument]) async throws -> RESPValue {
        let command = Self.evalsha(script, keys: keys, arguments: arguments)
        let connection = try await self.connection()
        do {
            return try await connection.execute(command)
        } catch let error as RedisError where error.replyCode == "NOSCRIPT" {
            _ = try await connection.execute(RedisCommand("SCRIPT", ["LOAD", script.source]))
            return try await connection.execute(command)
        }
    }

    static func evalsha(_ script: RedisScript, keys: [String], arguments: [any RedisArgument]) -> RedisCommand {
        var command = RedisCommand("EVALSHA", key: keys.first)
        command.append(script.sha1)
        command.append(keys.count)
        for key in keys { command.append(key) }
        for argument in arguments { argument.append(to: &command) }
        return command
    }
}
