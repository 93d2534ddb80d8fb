import NIOCore
import NIOPosix
import Synchronization
import TestSupport
import Testing

@testable import RedisClient

@Suite("Redis client against redis-server", .timeLimit(.minutes(5)))
struct RedisClientIntegrationTests {
    @Test func oneHundredThousandCommandsFromOneHundredTasksAreAnsweredInOrder() async throws {
        try await withRedisClient(try configuration()) { client in
            let mismatches = try await Self.echoMismatches(client, tasks: 100, each: 1000)
            #expect(mismatches == 0)
        }
    }

    /// `tasks` tasks each send `each` `ECHO`s of their own tokens, one after the other.
    /// - Returns: how many answers were not the token sent.
    private static func echoMismatches(_ client: RedisClient, tasks: Int, each: Int) async throws -> Int {
        try await withThrowingTaskGroup(of: Int.self) { group in
            for task in 0..<tasks {
                group.addTask {
                    var mismatches = 0
                    for index in 0..<each {
                        let token = "\(task):\(index)"
                        if try await client.execute("ECHO", token).string != token { mismatches += 1 }
                    }
                    return mismatches
                }
            }
            return try await group.reduce(0, +)
        }
    }

    @Test func anExplicitPipelineAnswersEachCommandInOrder() async throws {
        let key = TestRedis.uniqueName("pipeline")
        try await withRedisClient(try configuration()) { client in
            var commands = (0..<1000).map { _ in RedisCommand("INCR", key: key, [key]) }
            commands.insert(RedisCommand("HSET", key: key, [key, "f", "v"]), at: 500)
            let results = try await client.pipeline(commands)
            #expect(results.count == 1001)
            let values = results.enumerated().filter { $0.offset != 500 }.compactMap { try? $0.element.get().int }
            #expect(values == Array(1...1000))
            guard case .failure(let error) = results[500] else {
                Issue.record("HSET on a string must fail")
                return
            }
            #expect(error.code == .serverError && error.replyCode == "WRONGTYPE")
            _ = try await client.delete([key])
        }
    }

    @Test func errorRepliesAreToldApartFromTransportFailures() async throws {
        try await withRedisClient(try configuration()) { client in
            let error = await #expect(throws: RedisError.self) { try await client.execute("NOSUCHCOMMAND", "x") }
            #expect(error?.code == .serverError)
            #expect(error?.replyCode == "ERR")
            #expect(error?.isRetriable == false)
            let pong = try await client.execute("PING")
            #expect(pong == .simpleString("PONG"))
        }
    }

    /// Commands run for their effect alone: they run, Redis writes no reply for them (its
    /// output grows by the one reply that ends each write, not one per command), and callers
    /// whose commands go out between them on the same connection each get their own reply.
    @Test func commandsRunWithoutRepliesAreNotAnswered() async throws {
        let server = try RedisServerProcess()
        defer { server.stop() }
        let run = try await Self.runWithoutReplies(url: server.url)
        #expect(run.mismatches == 0)
        // 2,500 `+OK` would be 12,500 bytes; the ends of the three writes are 15.
        #expect(run.outputBytes < 200, "Redis wrote \(run.outputBytes) bytes of replies")
    }

    /// Where an ACL denies `CLIENT`, commands run for their effect alone go as a pipeline whose
    /// replies are read and dropped: they run, and every other caller still gets its own reply.
    @Test func commandsRunWithoutRepliesWhereClientReplyIsDenied() async throws {
        let server = try RedisServerProcess()
        defer { server.stop() }
        let admin = try await RedisConnection.connect(
            configuration: configuration(url: server.url),
            eventLoop: MultiThreadedEventLoopGroup.singleton.any()
        )
        defer { admin.close() }
        _ = try await admin.execute(RedisCommand("ACL", ["SETUSER", "limited", "on", ">secret", "~*", "&*", "+@all", "-client"]))
        let run = try await Self.runWithoutReplies(url: "redis://limited:secret@127.0.0.1:\(server.port)")
        #expect(run.mismatches == 0)
        #expect(run.outputBytes >= 2500 * 5, "Redis answered each command")
    }

    /// Runs 2,500 `SET`s without replies on a one-connection client of a private server, 20
    /// tasks sending `ECHO`s meanwhile, then checks every key; and, alone, measures the bytes
    /// Redis wrote for them (`total_net_output_bytes`, less what an `INFO` itself takes).
    private static func runWithoutReplies(url: String) async throws -> (mismatches: Int, outputBytes: Int64) {
        var settings = try configuration(url: url)
        settings.poolSize = 1
        return try await withRedisClient(settings) { client in
            func commands(_ round: Int) -> [RedisEncodedCommand] {
                (0..<2500).map { RedisEncodedCommand(RedisCommand("SET", key: "k\($0)", ["k\($0)", "v\(round)-\($0)"])) }
            }
            async let silent: Void = client.executeWithoutReplies(commands(1), batch: 1000)
            let mismatches = try await Self.echoMismatches(client, tasks: 20, each: 200)
            try await silent
            #expect(try await client.execute("DBSIZE").int == 2500)
            #expect(try await client.execute("GET", "k1234").string == "v1-1234")

            func output() async throws -> Int64 {
                let info = try #require(try await client.execute("INFO", "stats").string)
                let line = try #require(info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("total_net_output_bytes:") })
                return try #require(Int64(line.dropFirst("total_net_output_bytes:".count)))
            }
            let first = try await output()
            let second = try await output()
            try await client.executeWithoutReplies(commands(2), batch: 1000)
            let third = try await output()
            #expect(try await client.execute("GET", "k2499").string == "v2-2499")
            return (mismatches, third - second - (second - first))
        }
    }

    @Test func typedHelpersRoundTripBinaryValues() async throws {
        let key = TestRedis.uniqueName("bin")
        try await withRedisClient(try configuration()) { client in
            let value: [UInt8] = [0, 13, 10, 255, 36]
            try await client.set(key, to: value, expiresIn: .seconds(30))
            #expect(try await client.get(key).map { Array($0.readableBytesView) } == value)
            #expect(try await client.exists(key))
            #expect(try await client.delete([key]) == 1)
            #expect(try await client.get(key) == nil)
        }
    }

    @Test func aConnectionKilledMidLoadFailsOnlyItsCallersAndRecovers() async throws {
        let server = try RedisServerProcess()
        let admin = try await RedisConnection.connect(
            configuration: configuration(url: server.url),
            eventLoop: MultiThreadedEventLoopGroup.singleton.any()
        )
        defer { admin.close() }
        try await withRedisClient(try configuration(url: server.url, timeout: .seconds(2))) { client in
            try await waitForRecovery(client)
            let outcome = Outcome()
            let killing = Outcome()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<20 {
                    group.addTask {
                        // Load runs until the kills are over (bounded), so every kill lands mid-load.
                        for _ in 0..<200_000 {
                            if killing.current.other == 1 { break }
                            do {
                                _ = try await client.execute("INCR", "counter")
                                outcome.withLock { $0.answers += 1 }
                            } catch let error as RedisError where error.isRetriable {
                                outcome.withLock { $0.retriable += 1 }
                                try await Task.sleep(for: .milliseconds(5))
                            } catch {
                                outcome.withLock { $0.other += 1 }
                            }
                        }
                    }
                }
                group.addTask {
                    // Each kill waits for answers since the one before (so it lands mid-load
                    // however slow the machine), and the load stops once the client answered
                    // again after the last one. Every wait is bounded.
                    func answersGrow(beyond count: Int) async throws {
                        for _ in 0..<2_000 where outcome.current.answers <= count {
                            try await Task.sleep(for: .milliseconds(5))
                        }
                    }
                    for round in 0..<3 {
                        try await answersGrow(beyond: outcome.current.answers + 50)
                        // One command surely in flight at the kill, whatever the load's timing (a
                        // starved task pool may leave none of the INCRs on the wire): a BLPOP the
                        // server holds until the kill.
                        async let held: Void = {
                            do {
                                _ = try await client.execute("BLPOP", "\(server.port):never:\(round)", "1.5")
                            } catch let error as RedisError where error.isRetriable {
                                outcome.withLock { $0.retriable += 1 }
                            } catch {
                                outcome.withLock { $0.other += 1 }
                            }
                        }()
                        for _ in 0..<400 {
                            let clients = try await admin.execute(RedisCommand("CLIENT", ["LIST"])).string ?? ""
                            if clients.contains("cmd=blpop") { break }
                            try await Task.sleep(for: .milliseconds(2))
                        }
                        let killed = try await admin.execute(RedisCommand("CLIENT", ["KILL", "TYPE", "normal", "SKIPME", "yes"]))
                        killing.withLock { $0.answers += Int(killed.int ?? 0) }
                        await held
                    }
                    try await answersGrow(beyond: outcome.current.answers + 50)
                    killing.withLock { $0.other = 1 }
                }
                try await group.waitForAll()
            }
            let (answers, retriable, other) = (outcome.current.answers, outcome.current.retriable, outcome.current.other)
            #expect(killing.current.answers >= 3, "each kill closed at least one connection")
            #expect(retriable > 0, "callers of killed connections see retriable errors")
            #expect(other == 0)
            #expect(answers > 0)
            try await waitForRecovery(client)
            // Every answered INCR ran; a failed one may or may not have run.
            let counter = try #require(try await retryingTransportErrors { try await client.execute("GET", "counter") }.int)
            #expect(counter >= Int64(answers))
        }
    }

    @Test func theClientRecoversFromARedisRestart() async throws {
        let server = try RedisServerProcess()
        try await withRedisClient(try configuration(url: server.url, timeout: .seconds(1))) { client in
            try await waitForRecovery(client)
            try await client.set("k", to: "before")
            server.kill()
            let error = await #expect(throws: RedisError.self) { try await client.execute("GET", "k") }
            #expect(error?.isRetriable == true)
            try server.start()
            try await waitForRecovery(client)
            // The server restarted empty (no persistence in this test): the key is gone, the client works.
            #expect(try await retryingTransportErrors { try await client.get("k") } == nil)
            try await retryingTransportErrors { try await client.set("k", to: "after") }
            #expect(try await retryingTransportErrors { try await client.get("k") }.map { String(buffer: $0) } == "after")
        }
    }

    @Test func scriptsSurviveScriptFlush() async throws {
        let script = RedisScript("return {KEYS[1], ARGV[1], '\(TestRedis.uniqueName())'}")
        let key = TestRedis.uniqueName("script")
        try await withRedisClient(try configuration()) { client in
            let first = try await client.run(script, keys: [key], arguments: ["a"])
            #expect(first.array?.prefix(2).compactMap(\.string) == [key, "a"])
            try await client.execute("SCRIPT", "FLUSH")
            let second = try await client.run(script, keys: [key], arguments: ["b"])
            #expect(second.array?.prefix(2).compactMap(\.string) == [key, "b"])
            // Run again from its source, and so cached again for the next EVALSHA.
            let exists = try await client.execute("SCRIPT", "EXISTS", script.sha1)
            #expect(exists.array?.first?.int == 1)
            let error = await #expect(throws: RedisError.self) {
                try await client.run(RedisScript("return redis.error_reply('NOTMEMBER bob')"), keys: [key], arguments: [])
            }
            #expect(error?.replyCode == "NOTMEMBER")
            #expect(error?.replyDetail == "bob")
        }
    }

    /// With a connection per loop, a caller on a loop gets that loop's; without a loop, turns.
    @Test func aCallerOnAnEventLoopGetsThatLoopsConnection() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 3)
        let loops = Array(group.makeIterator())
        var configuration = try configuration()
        configuration.poolSize = 3
        let client = RedisClient(configuration: configuration, eventLoopGroup: group)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await client.run() }
            defer { tasks.cancelAll() }
            try await waitUntil("a connection is up on every loop") {
                loops.allSatisfy { loop in client.readyConnection(forKey: nil, on: loop)?.channel.eventLoop === loop }
            }
            // Without a loop, the connections take turns.
            let picked = (0..<6).compactMap { _ in client.readyConnection(forKey: nil)?.channel.eventLoop }
            #expect(Set(picked.map { ObjectIdentifier($0) }) == Set(loops.map { ObjectIdentifier($0) }))
        }
        try await group.shutdownGracefully()
    }

    @Test func repliesAreDecodedWhereTheyLie() async throws {
        let key = TestRedis.uniqueName("decoded")
        let eventLoop = MultiThreadedEventLoopGroup.singleton.any()
        @Sendable func lengths(_ reply: RESPReply) throws -> [Int] {
            var cursor = reply.cursor
            guard case .array(let count)? = cursor.next() else { throw TestFailure("not an array") }
            return try (0..<count).map { _ in
                guard case .bulkString(let bytes)? = cursor.next() else { throw TestFailure("not a bulk string") }
                return bytes.count
            }
        }
        try await withRedisClient(try configuration()) { client in
            try await waitForRecovery(client)
            try await client.execute("RPUSH", key, "a", "bb", "ccc")
            let range = RedisCommand("LRANGE", key: key, [key, 0, -1])
            #expect(try await client.execute(range, decode: lengths) == [1, 2, 3])
            let now = try #require(client.executeImmediately(range, on: eventLoop, decode: lengths))
            #expect(try await now.get() == [1, 2, 3])
            // An error reply fails the call as `execute` does; so does the decoder's own error.
            let error = await #expect(throws: RedisError.self) {
                try await client.execute(RedisCommand("GET", key: key, [key]), decode: lengths)
            }
            #expect(error?.replyCode == "WRONGTYPE")
            await #expect(throws: TestFailure.self) { try await client.execute(RedisCommand("PING"), decode: lengths) }
            // The connection goes on after both.
            #expect(try await client.execute(range, decode: lengths) == [1, 2, 3])
        }
    }

    /// The same with no task, as a future: a script Redis does not hold is run from its source,
    /// and error replies fail the future as they would throw. (Where and when its result comes:
    /// ``scriptCallbacksComeOnTheCallersLoopAfterTheCall``, on the callback the future wraps.)
    @Test func scriptsRunImmediatelyFromAnEventLoop() async throws {
        let script = RedisScript("return {KEYS[1], ARGV[1], ARGV[2], '\(TestRedis.uniqueName())'}")
        let key = TestRedis.uniqueName("script")
        let eventLoop = MultiThreadedEventLoopGroup.singleton.any()
        try await withRedisClient(try configuration()) { client in
            try await waitForRecovery(client)
            @Sendable func strings(_ reply: RESPReply) throws -> [String] {
                var cursor = reply.cursor
                guard case .array(let count)? = cursor.next() else { throw TestFailure("no array") }
                return try (0..<count).map { _ in
                    guard case .bulkString(let bytes)? = cursor.next() else { throw TestFailure("not a bulk string") }
                    return String(decoding: bytes, as: UTF8.self)
                }
            }
            // The script is new to Redis: the first EVALSHA gets NOSCRIPT, and the EVAL in its
            // place caches it for the second. (No SCRIPT FLUSH: other tests run beside this one.)
            for round in 0..<2 {
                let future = client.runUnwaitedImmediately(
                    script,
                    keys: [key],
                    arguments: ["a\(round)", 42],
                    on: eventLoop,
                    decode: strings
                )
                let reply = try await #require(future).get()
                #expect(reply.prefix(3) == [key, "a\(round)", "42"])
            }
            let error = await #expect(throws: RedisError.self) {
                try await client.runUnwaitedImmediately(
                    RedisScript("return redis.error_reply('NOTMEMBER bob')"),
                    keys: [key],
                    arguments: [],
                    on: eventLoop,
                    decode: strings
                )?.get()
            }
            #expect(error?.replyCode == "NOTMEMBER")
        }
        // The EVAL sent in place of an EVALSHA carries the same keys and arguments.
        let evalsha = RedisClient.evalsha(script, keys: [key, "k2"], arguments: ["x", 7, ""])
        let eval = RedisClient.eval(script, replacing: evalsha)
        #expect(eval.name == "EVAL")
        #expect(eval.key == key)
        #expect(eval.argumentCount == evalsha.argumentCount)
        #expect(eval.description == "EVAL \(script.source) 2 \(key) k2 x 7 ")
    }

    /// The callback form, for a caller on the loop: its result comes on the caller's loop, once,
    /// after the call that sent the script: for a script new to Redis (run again from its
    /// source, in a task), for one Redis holds, and for an error reply.
    @Test func scriptCallbacksComeOnTheCallersLoopAfterTheCall() async throws {
        let script = RedisScript("return ARGV[1] .. '\(TestRedis.uniqueName())'")
        let refusing = RedisScript("return redis.error_reply('NOTMEMBER ' .. ARGV[1])")
        let key = TestRedis.uniqueName("script")
        let eventLoop = MultiThreadedEventLoopGroup.singleton.any()
        @Sendable func text(_ reply: RESPReply) throws -> String {
            var cursor = reply.cursor
            guard case .bulkString(let bytes)? = cursor.next() else { throw TestFailure("not a bulk string") }
            return String(decoding: bytes, as: UTF8.self)
        }
        final class Returned: Sendable {
            let value = Atomic(false)
        }
        /// Runs `script` from the loop; returns its result, whether it came on the loop, and
        /// whether the call that sent it had returned by then.
        func run(_ script: RedisScript, _ argument: String, on client: RedisClient) async throws -> (Result<String, any Error>, Bool, Bool)
        {
            try await withCheckedThrowingContinuation { continuation in
                eventLoop.execute {
                    let returned = Returned()
                    let evalsha = RedisClient.evalsha(script, keys: [key], arguments: [argument])
                    let sent = client.runUnwaitedImmediately(script, evalsha, on: eventLoop, decode: text) {
                        continuation.resume(returning: ($0, eventLoop.inEventLoop, returned.value.load(ordering: .relaxed)))
                    }
                    returned.value.store(true, ordering: .relaxed)
                    if !sent { continuation.resume(throwing: TestFailure("no connection was ready")) }
                }
            }
        }
        try await withRedisClient(try configuration()) { client in
            try await waitForRecovery(client)
            for round in 0..<2 {
                let (result, onLoop, afterTheCall) = try await run(script, "r\(round)", on: client)
                #expect(try result.get().hasPrefix("r\(round)"), "round \(round)")
                #expect(onLoop, "round \(round)")
                #expect(afterTheCall, "round \(round)")
            }
            let (result, onLoop, afterTheCall) = try await run(refusing, "bob", on: client)
            #expect(throws: RedisError.self) { try result.get() }
            if case .failure(let error as RedisError) = result { #expect(error.replyCode == "NOTMEMBER") }
            #expect(onLoop)
            #expect(afterTheCall)
        }
    }

    /// With a connection per event loop, each loop has one of its own, whichever connection
    /// asked the server what it is: a caller's commands then go out and come back on its loop.
    @Test func eachEventLoopGetsAConnectionOfItsOwn() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let loops = Array(group.makeIterator())
        var configuration = try configuration()
        configuration.poolSize = loops.count
        // Several clients in turn: the group hands out its loops in turn, so the first connection
        // of each is not made on the same loop.
        for _ in 0..<4 {
            try await withRedisClient(configuration, eventLoopGroup: group) { client in
                try await waitUntil("each loop has a connection of its own", timeout: .seconds(5)) {
                    loops.allSatisfy { loop in client.readyConnection(forKey: nil, on: loop)?.channel.eventLoop === loop }
                }
            }
        }
        try await group.shutdownGracefully()
    }

    /// Commands sent from their connection's loop go out at once, those of tasks as tasks of the
    /// loop: in whatever order the two meet, each reply reaches its own caller.
    @Test func commandsFromTheConnectionsLoopAndFromTasksGetTheirOwnReplies() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.any()
        // A connection per loop, as the relay has: whatever loop this is, it gets one.
        var configuration = try configuration()
        configuration.poolSize = Array(MultiThreadedEventLoopGroup.singleton.makeIterator()).count
        try await withRedisClient(configuration) { client in
            try await waitUntil("the loop has a connection of its own") {
                client.readyConnection(forKey: nil, on: loop)?.channel.eventLoop === loop
            }
            @Sendable func text(_ reply: RESPReply) -> String? { reply.value().string }
            async let fromTasks = Self.echoMismatches(client, tasks: 20, each: 200)
            var fromLoop: [EventLoopFuture<String?>] = []
            for burst in 0..<20 {
                let futures = try await loop.submit {
                    (0..<100).map { index in
                        client.executeImmediately(RedisCommand("ECHO", ["loop-\(burst)-\(index)"]), on: loop, decode: text)
                    }
                }.get()
                fromLoop += futures.compactMap { $0 }
                #expect(futures.allSatisfy { $0 != nil })
            }
            var mismatches = 0
            for (number, future) in fromLoop.enumerated() where try await future.get() != "loop-\(number / 100)-\(number % 100)" {
                mismatches += 1
            }
            #expect(fromLoop.count == 2000)
            #expect(mismatches == 0)
            #expect(try await fromTasks == 0)
        }
    }

    @Test func aCommandTimesOutAgainstAPausedServer() async throws {
        let server = try RedisServerProcess()
        let admin = try await RedisConnection.connect(
            configuration: configuration(url: server.url),
            eventLoop: MultiThreadedEventLoopGroup.singleton.any()
        )
        defer { admin.close() }
        try await withRedisClient(try configuration(url: server.url, timeout: .milliseconds(300))) { client in
            try await waitForRecovery(client)
            async let pause = admin.execute(RedisCommand("DEBUG", ["SLEEP", "3"]))
            // The pause begins once Redis has read it (later on a loaded machine); until then
            // commands are answered. The first that is not must fail within about its timeout.
            var failure: RedisError?
            let deadline = ContinuousClock.now + .seconds(2.5)
            while failure == nil, ContinuousClock.now < deadline {
                let started = ContinuousClock.now
                do {
                    _ = try await client.execute("GET", "k")
                    try await Task.sleep(for: .milliseconds(20))
                } catch let error as RedisError {
                    failure = error
                    #expect(ContinuousClock.now - started < .seconds(1.2), "a 300 ms command must not wait out the pause")
                }
            }
            let code = try #require(failure, "no command failed while Redis was paused").code
            #expect(code == .timeout || code == .unavailable)
            _ = try await pause
            try await waitForRecovery(client)
        }
    }

    @Test func noConnectionFailsFastWithUnavailable() async throws {
        let server = try RedisServerProcess()
        let url = server.url
        server.kill()
        try await withRedisClient(try configuration(url: url, timeout: .seconds(2))) { client in
            try await waitUntil("a connect attempt failed") {
                do {
                    _ = try await client.execute("PING")
                    return false
                } catch let error as RedisError {
                    return error.code == .unavailable
                }
            }
        }
    }
}

/// Tallies the outcomes of concurrent commands.
final class Outcome: Sendable {
    struct Counts { var answers = 0, retriable = 0, other = 0 }
    private let counts = Mutex(Counts())
    func withLock(_ body: (inout Counts) -> Void) { self.counts.withLock { body(&$0) } }
    var current: Counts { self.counts.withLock { $0 } }
}
