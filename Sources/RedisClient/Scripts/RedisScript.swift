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
    /// Runs a script with `EVALSHA`; on `NOSCRIPT` (after a restart or `SCRIPT FLUSH`) runs it
    /// again with `EVAL`, which is safe because a script that was not found did not run. `EVAL`
    /// also caches it for the next `EVALSHA`; unlike `SCRIPT LOAD` then `EVALSHA`, no second
    /// flush can come in between.
    ///
    /// - Throws: ``RedisError``; a script's `redis.error_reply` arrives as `.serverError`.
    @discardableResult
    public func run(_ script: RedisScript, keys: [String], arguments: [any RedisArgument]) async throws -> RESPValue {
        let connection = try await self.connection()
        do {
            return try await connection.execute(Self.evalsha(script, keys: keys, arguments: arguments))
        } catch let error as RedisError where error.replyCode == "NOSCRIPT" {
            return try await connection.execute(Self.eval(script, keys: keys, arguments: arguments))
        }
    }

    static func evalsha(_ script: RedisScript, keys: [String], arguments: [any RedisArgument]) -> RedisCommand {
        self.command("EVALSHA", script.sha1, keys: keys, arguments: arguments)
    }

    static func eval(_ script: RedisScript, keys: [String], arguments: [any RedisArgument]) -> RedisCommand {
        self.command("EVAL", script.source, keys: keys, arguments: arguments)
    }

    private static func command(_ name: String, _ script: String, keys: [String], arguments: [any RedisArgument]) -> RedisCommand {
        var command = RedisCommand(name, key: keys.first)
        command.append(script)
        command.append(keys.count)
        for key in keys { command.append(key) }
        for argument in arguments { argument.append(to: &command) }
        return command
    }
}
