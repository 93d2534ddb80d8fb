import Foundation
import Relay
import TestSupport
import Testing

/// The heavier `GET /ws` tests (contract section 5): catch-up by resume, many senders and
/// sockets, lost Pub/Sub messages, a slow consumer.
@Suite("WebSocket delivery under load", .timeLimit(.minutes(5)))
struct WebSocketLoadTests {
    @Test func resumeReplaysEverythingAfterTheCursorThenGoesLive() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            let first = try await TestSocket.connect(relay, token: relay.token(bob), label: "first")
            let seen = try await relay.send(alice, id, "seen live")
            let cursor = try #require(seen["seq"].int)
            _ = try await first.waitFor("the live message") { $0["seq"].int == cursor && $0["channel_id"].string == id }
            await first.close()

            for index in 0..<500 { try await relay.send(alice, id, "missed \(index)") }
            let top = try await relay.lastSeq(alice, id)
            #expect(top == cursor + 500)

            let socket = try await TestSocket.connect(relay, token: relay.token(bob), label: "resumed")
            defer { socket.abort() }
            let start = socket.frames.count
            try await socket.send(json: ["type": "resume", "cursors": [id: cursor]])
            let resumed = try await socket.waitFor("resumed", from: start, timeout: .seconds(30)) { $0["type"].string == "resumed" }
            #expect(resumed["type"].string == "resumed")
            let frames = socket.frames
            let resumedIndex = try #require(frames.firstIndex { $0["type"].string == "resumed" })
            let replayed = frames[..<resumedIndex].filter { $0["channel_id"].string == id && $0["seq"].int != nil }
            expectSeqs(replayed.map { $0["seq"].int ?? -1 }, Array((cursor + 1)...top), "replayed before resumed")
            #expect(replayed.last["text"].string == "missed 499")

            let live = try await relay.send(alice, id, "live after resume")
            #expect(live["seq"].int == top + 1)
            _ = try await socket.waitFor("the live message after resumed") { $0["seq"].int == top + 1 && $0["channel_id"].string == id }
            expectSeqs(socket.seqs(id), Array((cursor + 1)...(top + 1)), "everything after the cursor, once, in order")
            await socket.close()
        }
    }

    /// A resume of large events to a client that reads, though slower than the relay writes,
    /// is never closed as a slow consumer: a page of the log writes at most half the
    /// connection's budget, less what other pages left on the socket, and the next is read once
    /// the socket has taken it. (Pages of 200 events of 8 KB, 1.6 MB each, overflowed a budget
    /// of 256 KiB whatever the client did.)
    @Test func aResumeOfLargeEventsFitsTheBudgetOfAClientThatReads() async throws {
        let configure: RelayConfigurator = {
            $0.limits.maxQueuedBytes = 256 * 1024
            $0.heartbeat = .seconds(3600)
        }
        try await withRelay(configure) { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let ids = [try await relay.createGroup(alice, members: [bob]), try await relay.createGroup(alice, members: [bob])]
            var cursors: [String: Int] = [:]
            for id in ids { cursors[id] = try await relay.lastSeq(alice, id) }
            let text = String(repeating: "y", count: 8000)
            for id in ids { try await fill(relay, alice, id, count: 300, text: text) }
            let socket = try await StalledSocket.open(port: relay.port, token: relay.token(bob), receiveBuffer: 16_384)
            let resume = ids.map { "\"\($0)\":\(cursors[$0]!)" }.joined(separator: ",")
            try socket.sendText(#"{"type":"resume","cursors":{\#(resume)}}"#)
            // About 8 MB/s: 16 KB, then a millisecond's pause.
            let (bytes, ended) = try await socket.read(timeout: .seconds(60), chunk: 16_384, pause: .milliseconds(1)) { read in
                StalledSocket.closeCode(in: read) != nil || String(decoding: read.suffix(64), as: UTF8.self).contains("\"resumed\"")
            }
            let code = StalledSocket.closeCode(in: bytes)
            #expect(code == nil && !ended, "closed with \(String(describing: code))")
            let events = StalledSocket.frames(in: bytes).filter { $0.opcode == 0x1 }.compactMap { JSON(parsing: $0.payload) }
            for id in ids {
                let seqs = events.filter { $0["channel_id"].string == id }.compactMap { $0["seq"].int }
                expectSeqs(seqs, Array((cursors[id]! + 1)...(cursors[id]! + 300)), "every large event of \(id), once, in order")
            }
        }
    }

    /// Live events that arrive while a replay fills the socket wait in the log and come with
    /// the replay, in order: a client that reads is not closed for what the replay queued.
    /// (At the smallest budget, 64 KiB, events of 16 KB posted live to a channel already caught
    /// up, while another channel's replay kept the socket full, closed such a client with 4008.)
    @Test func liveEventsDuringALargeReplayWaitInTheLogForAClientThatReads() async throws {
        let configure: RelayConfigurator = {
            $0.limits.maxQueuedBytes = 64 * 1024
            $0.heartbeat = .seconds(3600)
        }
        try await withRelay(configure) { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let (small, large) = (try await relay.createGroup(alice, members: [bob]), try await relay.createGroup(alice, members: [bob]))
            let cursors = [small: try await relay.lastSeq(alice, small), large: try await relay.lastSeq(alice, large)]
            let text = String(repeating: "z", count: 16_000)
            for index in 0..<3 { try await relay.send(alice, small, "before \(index) \(text)") }
            try await fill(relay, alice, large, count: 400, text: text)
            let socket = try await StalledSocket.open(port: relay.port, token: relay.token(bob), receiveBuffer: nil)
            let resume = [small, large].map { "\"\($0)\":\(cursors[$0]!)" }.joined(separator: ",")
            try socket.sendText(#"{"type":"resume","cursors":{\#(resume)}}"#)
            // While the replay goes on, 16 KB events live to both, then a short last one to each.
            let sender = Task {
                for index in 0..<60 {
                    try await relay.send(alice, index.isMultiple(of: 2) ? small : large, "live \(index) \(text)")
                    try await Task.sleep(for: .milliseconds(40))
                }
                try await relay.send(alice, small, "last of small")
                try await relay.send(alice, large, "last of large")
            }
            // About 2 MB/s: 16 KB, then 8 ms.
            let seen = ByteSightings(["\"resumed\"", "last of small", "last of large"])
            let (bytes, ended) = try await socket.read(timeout: .seconds(60), chunk: 16_384, pause: .milliseconds(8)) { read in
                seen.scan(read)
            }
            try await sender.value
            let code = StalledSocket.closeCode(in: bytes)
            #expect(code == nil && !ended, "closed with \(String(describing: code))")
            let events = StalledSocket.frames(in: bytes).filter { $0.opcode == 0x1 }.compactMap { JSON(parsing: $0.payload) }
            for id in [small, large] {
                let top = try await relay.lastSeq(alice, id)
                let seqs = events.filter { $0["channel_id"].string == id }.compactMap { $0["seq"].int }
                // The socket was live before its resume was read: what it got then comes again.
                let replay = seqs.lastIndex(of: cursors[id]! + 1) ?? 0
                expectSeqs(Array(seqs[..<replay]), Set(seqs[..<replay]).sorted(), "live before the resume, once, in order")
                expectSeqs(Array(seqs[replay...]), Array((cursors[id]! + 1)...top), "every event of \(id), once, in order")
            }
        }
    }

    /// A client that stops reading in the middle of a replay is a slow consumer all the same:
    /// live events wait in the log for ten seconds at most, and the next one after that closes it
    /// with 4008. (Before, its replay waited for it and live events raised only the
    /// stream's target: nothing was ever written past the budget, and it was never closed.)
    @Test func aClientThatStopsReadingDuringAReplayIsClosedAsSlow() async throws {
        // Heartbeats far apart: the socket is not closed as silent first.
        let configure: RelayConfigurator = { $0.heartbeat = .seconds(3600) }
        try await withRelay(configure) { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            let cursor = try await relay.lastSeq(alice, id)
            // 6.4 MB: more than the kernel's buffers for the socket hold (4 MB at most here).
            try await fill(relay, alice, id, count: 400, text: String(repeating: "w", count: 16_000))
            let socket = try await StalledSocket.open(port: relay.port, token: relay.token(bob))
            try socket.sendText(#"{"type":"resume","cursors":{"\#(id)":\#(cursor)}}"#)
            // Reads nothing; live events keep coming for 20 s: they wait 10 s at most.
            let start = ContinuousClock.now
            for index in 0..<200 where ContinuousClock.now - start < .seconds(20) {
                try await relay.send(alice, id, "live \(index)")
                try await Task.sleep(for: .milliseconds(200))
            }
            let bytes = try await socket.readUntilCloseFrame(timeout: .seconds(30))
            #expect(StalledSocket.closeCode(in: bytes) == 4008)
        }
    }

    // MARK: - many senders, gap fill, slow consumer

    @Test
    func manySendersManySocketsEverySocketSeesEverySeqInOrder() async throws {
        try await withRelay { relay in
            let owner = TestRedis.uniqueName("owner")
            let senders = (0..<20).map { TestRedis.uniqueName("s\($0)") }
            let listeners = (0..<50).map { TestRedis.uniqueName("l\($0)") }
            let id = try await relay.createGroup(owner, members: senders + listeners)
            let baseline = try await relay.lastSeq(owner, id)
            try await withSockets { sockets in
                for (index, user) in listeners.enumerated() {
                    sockets.append(try await TestSocket.connect(relay, token: relay.token(user), label: "listener \(index)"))
                }
                for socket in sockets {
                    let start = socket.frames.count
                    try await socket.send(json: ["type": "resume", "cursors": [id: baseline]])
                    _ = try await socket.waitFor("resumed", from: start) { $0["type"].string == "resumed" }
                }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for sender in senders {
                        group.addTask {
                            for index in 0..<200 { try await relay.send(sender, id, "\(sender) \(index)") }
                        }
                    }
                    try await group.waitForAll()
                }
                let top = baseline + 4000
                #expect(try await relay.lastSeq(owner, id) == top)
                let expected = Array((baseline + 1)...top)
                for socket in sockets {
                    try await socket.waitUntil("seq \(top)", timeout: .seconds(60)) { frames in
                        frames.last { $0["channel_id"].string == id && $0["seq"].int != nil }["seq"].int == top
                    }
                    expectSeqs(socket.seqs(id), expected, socket.label)
                }
            }
        }
    }

    @Test
    func lostPubSubMessagesAreFilledFromTheLog() async throws {
        let redis = try RedisServerProcess()
        try await withRelay(redisURL: redis.url) { relay in
            let owner = TestRedis.uniqueName("owner")
            let listeners = (0..<5).map { TestRedis.uniqueName("l\($0)") }
            let id = try await relay.createGroup(owner, members: listeners)
            let baseline = try await relay.lastSeq(owner, id)
            try await withSockets { sockets in
                for (index, user) in listeners.enumerated() {
                    sockets.append(try await TestSocket.connect(relay, token: relay.token(user), label: "listener \(index)"))
                }
                for socket in sockets {
                    let start = socket.frames.count
                    try await socket.send(json: ["type": "resume", "cursors": [id: baseline]])
                    _ = try await socket.waitFor("resumed", from: start) { $0["type"].string == "resumed" }
                }
                let count = 600
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for lane in 0..<4 {
                        group.addTask {
                            for index in 0..<(count / 4) { try await relay.send(owner, id, "lane \(lane) #\(index)") }
                        }
                    }
                    group.addTask {
                        for _ in 0..<5 {
                            try await Task.sleep(for: .milliseconds(300))
                            try await Self.killSubscriptions(redis)
                        }
                    }
                    try await group.waitForAll()
                }
                // One more after the kills, so that every socket has something live to catch up on.
                try await Task.sleep(for: .milliseconds(500))
                try await relay.send(owner, id, "last")
                let top = baseline + count + 1
                #expect(try await relay.lastSeq(owner, id) == top)
                for socket in sockets {
                    try await socket.waitUntil("seq \(top)", timeout: .seconds(30)) { frames in
                        frames.contains { $0["channel_id"].string == id && $0["seq"].int == top }
                    }
                    expectSeqs(socket.seqs(id), Array((baseline + 1)...top), socket.label)
                }
            }
        }
        redis.kill()
    }

    /// With retention, a live gap (Pub/Sub lost while a burst is sent) may cover events the log
    /// no longer holds. A socket never skips a seq for it: it gets every event after its hello, or
    /// a gap-free run of them and then a close with 4008, and a resume from where it stopped says
    /// where the log now begins (`truncated`).
    @Test func aGapRetentionTrimmedIsNeverSkippedButEndsTheSocketWith4008() async throws {
        let redis = try RedisServerProcess()
        let configure: RelayConfigurator = { $0.retention.maxEvents = 5 }
        try await withRelay(configure, redisURL: redis.url) { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            for round in 0..<3 {
                let socket = try await TestSocket.connect(relay, token: relay.token(bob), label: "bob \(round)")
                defer { socket.abort() }
                let before = try await relay.lastSeq(alice, id)
                // A burst while the subscription is down: most of it is trimmed before a read of
                // the log could deliver it.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await Self.killSubscriptions(redis) }
                    for index in 0..<12 { group.addTask { try await relay.send(alice, id, "round \(round) #\(index)") } }
                    try await group.waitForAll()
                }
                try await Task.sleep(for: .milliseconds(300))
                try await relay.send(alice, id, "after the burst")
                let top = try await relay.lastSeq(alice, id)
                try await waitUntil("bob \(round) has seq \(top) or is closed") { socket.seqs(id).contains(top) || socket.isClosed }
                let seqs = socket.seqs(id)
                expectSeqs(seqs, Array((before + 1)..<(before + 1 + seqs.count)), "bob \(round): every seq after the hello, no gap")
                guard socket.isClosed else {
                    #expect(seqs.last == top, "bob \(round) is open: it has everything")
                    continue
                }
                #expect(socket.closeCode == 4008, "bob \(round): \(socket.frames.suffix(2))")
                let cursor = seqs.last ?? before
                let firstSeq = try #require(try await relay.channel(alice, id)["first_seq"].int)
                let again = try await TestSocket.connect(relay, token: relay.token(bob), label: "bob \(round) again")
                defer { again.abort() }
                let resumed = try await again.request(["type": "resume", "cursors": [id: cursor]]) { $0["type"].string == "resumed" }
                if cursor < firstSeq - 1 {
                    #expect(resumed["truncated"][id].int == firstSeq, "\(resumed)")
                }
            }
        }
        redis.kill()
    }

    /// While the relay's subscription is down (killed here; at start-up it is not up yet),
    /// what is published reaches no relay: a socket must still get every event after its hello,
    /// the first one included, and learn of a channel its user joined meanwhile.
    @Test func whatIsPublishedWhileTheSubscriptionIsDownStillArrives() async throws {
        let redis = try RedisServerProcess()
        try await withRelay(redisURL: redis.url) { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])

            // The first event after the hello, published while the subscription is down.
            let socket = try await TestSocket.connect(relay, token: relay.token(bob))
            defer { socket.abort() }
            try await Self.killSubscriptions(redis)
            let message = try await relay.send(alice, id, "the first event after the hello")
            let seq = try #require(message["seq"].int)
            let got = try await socket.waitFor("the first event after the hello") { $0["channel_id"].string == id && $0["seq"].int == seq }
            #expect(got == message)

            // The notice of a new channel, published while the subscription is down.
            try await Self.killSubscriptions(redis)
            let created = try await relay.createGroup(alice, members: [bob])
            let joined = try await socket.waitFor("bob's member_joined in the group made while the subscription was down") {
                $0["channel_id"].string == created && $0["type"].string == "member_joined" && $0["user_id"].string == bob
            }
            let next = try await relay.send(alice, created, "in the new group")
            let nextSeq = try #require(next["seq"].int)
            _ = try await socket.waitFor("the message in the new group") { $0["channel_id"].string == created && $0["seq"].int == nextSeq }
            let joinedSeq = try #require(joined["seq"].int)
            let seqs = socket.seqs(created)
            #expect(seqs == Array(joinedSeq...nextSeq), "from bob's member_joined on: \(seqs)")
            await socket.close()
        }
        redis.kill()
    }

    /// Drops every Pub/Sub connection of `redis`: what is published next reaches no one.
    static func killSubscriptions(_ redis: RedisServerProcess) async throws {
        let result = try await ChildProcess.run(
            "/usr/bin/redis-cli",
            ["-p", "\(redis.port)", "CLIENT", "KILL", "TYPE", "pubsub"],
            environment: ProcessInfo.processInfo.environment
        )
        #expect(result.termination == .exited(0), "\(result.standardError)")
    }

    @Test
    func aSocketThatStopsReadingIsDroppedAndOthersKeepEverything() async throws {
        // A small outbound queue (the limit is configurable), so that the stalled socket overflows
        // it; heartbeats far apart, so that on a slow machine the stalled socket is not closed as
        // silent before it overflows.
        let configure: (inout RelayConfiguration) -> Void = {
            $0.limits.maxQueuedBytes = 256 * 1024
            $0.heartbeat = .seconds(3600)
        }
        try await withRelay(configure) { relay in
            let owner = TestRedis.uniqueName("owner")
            let (slow, fast) = (TestRedis.uniqueName("slow"), TestRedis.uniqueName("fast"))
            let id = try await relay.createGroup(owner, members: [slow, fast])
            let baseline = try await relay.lastSeq(owner, id)
            let stalled = try await StalledSocket.open(port: relay.port, token: relay.token(slow))
            let reader = try await TestSocket.connect(relay, token: relay.token(fast), label: "reader")
            defer { reader.abort() }
            let start = reader.frames.count
            try await reader.send(json: ["type": "resume", "cursors": [id: baseline]])
            _ = try await reader.waitFor("resumed", from: start) { $0["type"].string == "resumed" }

            // 16 MB in all: more than the kernel's socket buffers can hold for the stalled socket.
            let text = String(repeating: "x", count: 4096)
            let count = 4000
            try await withThrowingTaskGroup(of: Void.self) { group in
                for lane in 0..<20 {
                    group.addTask {
                        for index in 0..<(count / 20) { try await relay.send(owner, id, "\(lane)/\(index) \(text)") }
                    }
                }
                try await group.waitForAll()
            }
            let top = baseline + count
            try await reader.waitUntil("seq \(top)", timeout: .seconds(60)) { frames in
                frames.contains { $0["channel_id"].string == id && $0["seq"].int == top }
            }
            expectSeqs(reader.seqs(id), Array((baseline + 1)...top), "the reading socket")
            #expect(!reader.isClosed)

            // Now read what the stalled socket got, well after it overflowed (more than the 2 s a
            // written close frame is given to be answered): everything it was owed up to the
            // overflow, then the close frame with 4008, then the end of the connection.
            try await Task.sleep(for: .seconds(3))
            let (bytes, ended) = try await stalled.drain(timeout: .seconds(20))
            let frames = StalledSocket.frames(in: bytes)
            #expect(ended, "the relay kept a socket that never read (\(frames.count) frames, \(bytes.count) bytes queued)")
            #expect(StalledSocket.closeCode(in: bytes) == 4008, "the slow consumer's close frame: \(frames.suffix(2))")
            // Events it did get are a gap-free prefix.
            let seqs = frames.filter { $0.opcode == 0x1 }.compactMap { JSON(parsing: $0.payload) }
                .filter { $0["channel_id"].string == id }.compactMap { $0["seq"].int }
            #expect(seqs.count < count, "the stalled socket received every event: not slow enough to overflow")
            if let first = seqs.first {
                #expect(seqs == Array(first..<(first + seqs.count)), "the stalled socket's events have a gap")
            }
        }
    }
}

/// Whether every one of some byte strings has appeared in a growing buffer, looking only at
/// what was added since the last call (and a few bytes before it).
final class ByteSightings: @unchecked Sendable {
    private var wanted: [[UInt8]]
    private var scanned = 0

    init(_ strings: [String]) {
        self.wanted = strings.map { Array($0.utf8) }
    }

    /// Scans `bytes` past what was seen; true once every string was found.
    func scan(_ bytes: [UInt8]) -> Bool {
        let start = max(0, self.scanned - (self.wanted.map(\.count).max() ?? 0))
        self.wanted.removeAll { bytes[start...].firstRange(of: $0) != nil }
        self.scanned = bytes.count
        return self.wanted.isEmpty
    }
}
