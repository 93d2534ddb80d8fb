import NIOCore

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
    /// In cluster mode the script runs on the node that serves its first key's slot (every key
    /// of a script must share that slot).
    ///
    /// With ``RedisConfiguration/replicaWait`` above 0, `WAIT` follows the script on the same
    /// connection, in the same write: the call returns only once that many replicas hold what
    /// the script wrote. The script has run either way; run it again (scripts here are
    /// idempotent) to find out whether it is replicated by then.
    ///
    /// - Throws: ``RedisError``; a script's `redis.error_reply` arrives as `.serverError`;
    ///   `.unavailable` when fewer replicas than ``RedisConfiguration/replicaWait`` acknowledged
    ///   within ``RedisConfiguration/replicaWaitTimeout``.
    ///
    /// - Parameter lateReplication: called with the script's reply should the replicas
    ///   acknowledge its write after the call gave up on them (it threw `.unavailable`): the
    ///   connection that wrote it is asked again every half second, for up to half a minute
    ///   (``LateReplication``). Not called if that connection closes first.
    @discardableResult
    public func run(
        _ script: RedisScript,
        keys: [String],
        arguments: [any RedisArgument],
        lateReplication: (@Sendable (RESPValue) async -> Void)? = nil
    ) async throws -> RESPValue {
        try await self.run(script, Self.evalsha(script, keys: keys, arguments: arguments), lateReplication: lateReplication)
    }

    /// ``run(_:keys:arguments:lateReplication:)`` with its `EVALSHA` command made
    /// (``evalsha(_:keyCount:routedBy:bytes:arguments:)``).
    package func run(
        _ script: RedisScript,
        _ evalsha: RedisCommand,
        lateReplication: (@Sendable (RESPValue) async -> Void)? = nil
    ) async throws
        -> RESPValue
    {
        switch try await self.route() {
        case .connection(let connection):
            return try await self.run(script, evalsha, on: connection, asking: false, lateReplication: lateReplication)
        case .cluster(let cluster):
            return try await cluster.perform(key: evalsha.key) { connection, asking in
                try await self.run(script, evalsha, on: connection, asking: asking, lateReplication: lateReplication)
            }
        }
    }

    /// Runs a script with no `WAIT` after it, whatever ``RedisConfiguration/replicaWait`` says,
    /// and reads its reply in place with `decode` (which must copy what it keeps): for a script
    /// that writes nothing, or whose writes need no replica's word. `NOSCRIPT` is answered as
    /// ``run(_:keys:arguments:lateReplication:)`` answers it; routed and redirected as
    /// ``execute(_:decode:)``.
    package func runUnwaited<Value: Sendable>(
        _ script: RedisScript,
        keys: [String],
        arguments: [any RedisArgument],
        decode: @escaping @Sendable (RESPReply) throws -> Value
    ) async throws -> Value {
        try await self.runUnwaited(script, Self.evalsha(script, keys: keys, arguments: arguments), decode: decode)
    }

    /// ``runUnwaited(_:keys:arguments:decode:)`` with its `EVALSHA` command made.
    private func runUnwaited<Value: Sendable>(
        _ script: RedisScript,
        _ evalsha: RedisCommand,
        decode: @escaping @Sendable (RESPReply) throws -> Value
    ) async throws -> Value {
        do {
            return try await self.execute(evalsha, decode: decode)
        } catch let error as RedisError where error.replyCode == "NOSCRIPT" {
            return try await self.execute(Self.eval(script, replacing: evalsha), decode: decode)
        }
    }

    /// ``runUnwaited(_:keys:arguments:decode:)`` for a caller on an event loop, with no task: nil
    /// when no connection to the script's node is up (see ``executeImmediately(_:on:decode:)``).
    /// A script refused before it ran (`NOSCRIPT`, or a cluster node's redirection) is run
    /// again by ``runUnwaited(_:keys:arguments:decode:)``, in a task.
    package func runUnwaitedImmediately<Value: Sendable>(
        _ script: RedisScript,
        keys: [String],
        arguments: [any RedisArgument],
        on eventLoop: any EventLoop,
        decode: @escaping @Sendable (RESPReply) throws -> Value
    ) -> EventLoopFuture<Value>? {
        let promise = eventLoop.makePromise(of: Value.self)
        let sent = self.runUnwaitedImmediately(
            script,
            Self.evalsha(script, keys: keys, arguments: arguments),
            on: eventLoop,
            decode: decode,
            then: promise.completeWith
        )
        guard sent else {
            // Completed, so that it is not reported as leaked; no one holds its future.
            promise.fail(RedisError(.connectionClosed, "no connection to the script's node is up"))
            return nil
        }
        return promise.futureResult
    }

    /// ``runUnwaitedImmediately(_:keys:arguments:on:decode:)`` with its `EVALSHA` command made
    /// (``evalsha(_:keys:arguments:)``, ``evalsha(_:keyCount:routedBy:bytes:arguments:)``) and no
    /// future: false (and `then` never called) when the script could not go out at once;
    /// otherwise `then` is called once, on `eventLoop`, and never within this call.
    package func runUnwaitedImmediately<Value: Sendable>(
        _ script: RedisScript,
        _ evalsha: RedisCommand,
        on eventLoop: any EventLoop,
        decode: @escaping @Sendable (RESPReply) throws -> Value,
        then: @escaping @Sendable (Result<Value, any Error>) -> Void
    ) -> Bool {
        guard let connection = self.readyConnection(forKey: evalsha.key, on: eventLoop) else { return false }
        connection.execute(evalsha, on: eventLoop, decode: decode) { result in
            // One check for both refusals, rather than a step each: every reply passes here.
            guard case .failure(let error as RedisError) = result,
                error.replyCode == "NOSCRIPT" || (RedisClusterRedirection(error) != nil && self.isCluster)
            else { return then(result) }
            Task {
                let retried: Result<Value, any Error>
                do {
                    retried = .success(try await self.runUnwaited(script, evalsha, decode: decode))
                } catch {
                    retried = .failure(error)
                }
                eventLoop.execute { then(retried) }
            }
        }
        return true
    }

    /// The `EVAL` of `script` with the keys and arguments of its `EVALSHA` command.
    static func eval(_ script: RedisScript, replacing evalsha: RedisCommand) -> RedisCommand {
        var command = RedisCommand("EVAL", key: evalsha.key)
        command.append(script.source)
        var offset = evalsha.lengths.prefix(2).reduce(0, +)
        for length in evalsha.lengths.dropFirst(2) {
            command.append(bytes: evalsha.storage[offset..<(offset + length)])
            offset += length
        }
        return command
    }

    /// `[ASKING] EVALSHA [WAIT]` in one write; on `NOSCRIPT` the same with `EVAL`.
    private func run(
        _ script: RedisScript,
        _ evalsha: RedisCommand,
        on connection: RedisConnection,
        asking: Bool,
        lateReplication: (@Sendable (RESPValue) async -> Void)?
    ) async throws -> RESPValue {
        let replicas = self.configuration.replicaWait
        let (seconds, attoseconds) = self.configuration.replicaWaitTimeout.components
        let waitMilliseconds = Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
        func commands(_ call: RedisCommand) -> [RedisCommand] {
            var commands = asking ? [RedisCommand("ASKING")] : []
            commands.append(call)
            if replicas > 0 { commands.append(RedisCommand("WAIT", [replicas, waitMilliseconds])) }
            return commands
        }
        let scriptIndex = asking ? 1 : 0
        var results: [Result<RESPValue, RedisError>]
        if !asking && replicas == 0 {
            // The common case, one command: no pipeline collector.
            do {
                return try await connection.execute(evalsha)
            } catch let error as RedisError where error.replyCode == "NOSCRIPT" {
                return try await connection.execute(Self.eval(script, replacing: evalsha))
            }
        }
        results = await connection.pipeline(commands(evalsha))
        if case .failure(let error) = results[scriptIndex], error.replyCode == "NOSCRIPT" {
            results = await connection.pipeline(commands(Self.eval(script, replacing: evalsha)))
        }
        let reply = try results[scriptIndex].get()
        if replicas > 0 {
            let acknowledged: Int64
            switch results[scriptIndex + 1] {
            case .success(let answer):
                acknowledged = answer.int ?? 0
            case .failure(let error):
                // `WAIT` refused (`UNBLOCKED`: the node was made a replica while it waited): the
                // write may be lost with it, and no one can say. Unavailable, as a late replica is
                // (the caller's retry with the same id is safe), and nothing is pushed later.
                throw RedisError(.unavailable, "the write's replicas could not be asked: \(error.message)")
            }
            guard acknowledged >= replicas else {
                if let lateReplication {
                    self.lateReplication.add(reply, on: connection, replicas: replicas, then: lateReplication)
                }
                throw RedisError(.unavailable, "the write reached \(acknowledged) of \(replicas) replicas in time")
            }
        }
        return reply
    }

    /// `script`'s `EVALSHA` with `keys` and `arguments`, routed by its first key.
    package static func evalsha(_ script: RedisScript, keys: [String], arguments: [any RedisArgument]) -> RedisCommand {
        // Room for the keys and about as much again for the arguments: the storage is not
        // grown argument by argument.
        let keyBytes = keys.reduce(0) { $0 + $1.utf8.count }
        var command = Self.evalsha(
            script,
            keyCount: keys.count,
            routedBy: keys.first,
            bytes: 2 * keyBytes + 256,
            arguments: arguments.count
        )
        for key in keys { command.append(key) }
        for argument in arguments { argument.append(to: &command) }
        return command
    }

    /// The start of `script`'s `EVALSHA` (its name, SHA-1 and key count), for the caller to
    /// append its `keyCount` keys, then its arguments, with room for about `bytes` of them.
    /// `key` is where a cluster sends it: its first key, or any key of the same slot.
    package static func evalsha(
        _ script: RedisScript,
        keyCount: Int,
        routedBy key: String?,
        bytes: Int,
        arguments: Int
    ) -> RedisCommand {
        var command = RedisCommand("EVALSHA", key: key, reservingBytes: 64 + bytes, arguments: 3 + keyCount + arguments)
        command.append(script.sha1)
        command.append(keyCount)
        return command
    }
}
