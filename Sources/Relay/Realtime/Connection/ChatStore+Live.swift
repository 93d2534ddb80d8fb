import NIOCore
import NIOWebSocket
import RedisClient

extension ChatStore {
    /// What a resume needs to know of each channel, in one round trip: whether the user is a
    /// member now (Redis, not the connection, is the truth), and where the log ends and begins.
    /// A channel whose lookups failed (its shard down, on a cluster) is `unavailable`; the
    /// others are answered all the same.
    func resumeLookups(channels: [String], user: String) async throws -> [String: LiveConnectionHandler.StateMachine.ResumeLookup] {
        guard !channels.isEmpty else { return [:] }
        var commands: [RedisCommand] = []
        commands.reserveCapacity(channels.count * 5)
        for channel in channels {
            let keys = RelayKeys.Channel(channel)
            commands.append(RedisCommand("HMGET", key: keys.meta, [keys.meta, "type", RelayKeys.Channel.replicatedSeq]))
            commands.append(RedisCommand("SISMEMBER", key: keys.members, [keys.members, user]))
            commands.append(RedisCommand("GET", key: keys.seq, [keys.seq]))
            commands.append(RedisCommand("XRANGE", key: keys.log, [keys.log, "-", "+", "COUNT", "1"]))
            commands.append(RedisCommand("HGET", key: keys.membership, [keys.membership, user]))
        }
        let results = try await self.timed("resume") { try await self.redis.pipeline(commands) }
        var lookups: [String: LiveConnectionHandler.StateMachine.ResumeLookup] = [:]
        for (index, channel) in channels.enumerated() {
            let base = index * 5
            guard results[base..<base + 5].allSatisfy({ (try? $0.get()) != nil }) else {
                lookups[channel] = .unavailable
                continue
            }
            let meta = try results[base].get().array ?? []
            guard meta.first?.string != nil else {
                lookups[channel] = .notFound
                continue
            }
            guard try results[base + 1].get().int == 1 else {
                // A DM's outsider gets what a missing channel gets (ChatError.notMember).
                lookups[channel] = ChannelType.isDirectMessage(channel) ? .notFound : .forbidden
                continue
            }
            let stored = try results[base + 2].get().string.flatMap { Int64($0) } ?? 0
            let first = Self.firstSeq(try results[base + 3].get(), lastSeq: stored)
            // With --redis-wait, replayed no further than replicas are known to hold.
            let last = Self.readable(lastSeq: stored, replicated: meta.count > 1 ? meta[1].string : nil)
            // Channels made before membership was recorded have none: replayed as before.
            let record = try results[base + 4].get().string.flatMap(MembershipRecord.init)
            lookups[channel] = .member(lastSeq: last, firstSeq: first, membership: record)
        }
        return lookups
    }

    typealias LogEvent = LiveConnectionHandler.StateMachine.LogEvent

    /// Events after `seq`, ascending, up to `limit`, each as a frame made straight from the
    /// reply's bytes (a replay: the JSON goes into the frame as the log holds it).
    /// With `--redis-wait`, no further than the channel's `replicated_seq` (`lua/log_page.lua`):
    /// an event above it may be one a failover loses, its seq given to another.
    func logEvents(channel id: String, after seq: Int64, limit: Int) async throws -> [LogEvent] {
        try await self.timed("replay") {
            guard self.scripts.publishes else {
                let call = Self.logPageCall(channel: id, after: seq, limit: limit)
                return try await self.redis.runUnwaited(
                    self.scripts.logPage,
                    keys: call.keys,
                    arguments: call.arguments,
                    decode: Self.logPage
                )
            }
            return try await self.redis.execute(Self.logRange(channel: id, after: seq, limit: limit), decode: Self.logPage)
        }
    }

    /// ``logEvents(channel:after:limit:)`` for a caller on `eventLoop`, with no task: nil when
    /// the read cannot go out at once (see `RedisClient.executeImmediately`).
    func logEventsImmediately(
        channel id: String,
        after seq: Int64,
        limit: Int,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<[LogEvent]>? {
        self.timed("replay") {
            guard self.scripts.publishes else {
                let call = Self.logPageCall(channel: id, after: seq, limit: limit)
                return self.redis.runUnwaitedImmediately(
                    self.scripts.logPage,
                    keys: call.keys,
                    arguments: call.arguments,
                    on: eventLoop,
                    decode: Self.logPage
                )
            }
            return self.redis.executeImmediately(Self.logRange(channel: id, after: seq, limit: limit), on: eventLoop, decode: Self.logPage)
        }
    }

    /// The keys and arguments of `lua/log_page.lua` for up to `limit` events after `seq`.
    private static func logPageCall(channel id: String, after seq: Int64, limit: Int) -> (keys: [String], arguments: [any RedisArgument]) {
        let keys = RelayKeys.Channel(id)
        return ([keys.log, keys.meta], [seq + 1, limit])
    }

    /// `XRANGE` of a channel's log: up to `limit` entries after `seq`.
    private static func logRange(channel id: String, after seq: Int64, limit: Int) -> RedisCommand {
        let log = RelayKeys.Channel(id).log
        return RedisCommand("XRANGE", key: log, [log, "\(seq + 1)-0", "+", "COUNT", limit])
    }

    /// The events of an `XRANGE` reply (`[[id, [field, value, …]], …]`, the event in field `e`),
    /// read where the reply lies: each event's frame is the one copy of its bytes.
    @Sendable static func logPage(_ reply: RESPReply) throws -> [LogEvent] {
        var cursor = reply.cursor
        guard case .array(let rows)? = cursor.next() else { throw RedisError(.protocolViolation, "XRANGE answered no array") }
        var events: [LogEvent] = []
        events.reserveCapacity(rows)
        for _ in 0..<rows {
            guard case .array(count: 2)? = cursor.next(), case .bulkString(let entryID)? = cursor.nextValue(),
                let seq = Self.seq(ofEntryID: entryID), case .array(var fields)? = cursor.next()
            else { throw RedisError(.protocolViolation, "malformed stream entry in an XRANGE reply") }
            var event: LogEvent?
            while fields > 0 {
                let name = cursor.nextValue()
                let value = fields > 1 ? cursor.nextValue() : nil
                fields -= 2
                if event == nil, case .bulkString(let name)? = name, name.count == 1, name[0] == UInt8(ascii: "e"),
                    case .bulkString(let json)? = value
                {
                    event = LogEvent(
                        seq: seq,
                        frame: WebSocketWire.frame(opcode: .text, bytes: json),
                        membership: EventMembership.of(bytes: json)
                    )
                }
            }
            if let event { events.append(event) }
        }
        return events
    }

    /// Per channel, the seq after which its log holds only events made at or after `millis`
    /// (their `created_at`): where a connection that could not read its channels at its `hello`
    /// starts each one it finds later, so that nothing posted since it connected is missed.
    /// Looks at most `limit` events back: a channel with more since then starts `limit` events
    /// before its log's end (the client's resume brings the rest).
    func seqs(before millis: Int64, channels: [String], limit: Int = 200) async throws -> [String: Int64] {
        guard !channels.isEmpty else { return [:] }
        // Few events are that new: the newest eight of every channel come in one round trip, and
        // a channel with more is read further back on its own.
        let firstPage = min(8, limit)
        // With --redis-wait, no later than what replicas hold (as ``anchors(channels:user:)``).
        let capped = !self.scripts.publishes
        let stride = capped ? 3 : 2
        var commands: [RedisCommand] = []
        commands.reserveCapacity(channels.count * stride)
        for channel in channels {
            let keys = RelayKeys.Channel(channel)
            commands.append(RedisCommand("GET", key: keys.seq, [keys.seq]))
            commands.append(RedisCommand("XREVRANGE", key: keys.log, [keys.log, "+", "-", "COUNT", firstPage]))
            if capped { commands.append(keys.replicatedSeqCommand) }
        }
        let results = try await self.timed("seq") { try await self.redis.pipeline(commands) }
        var seqs: [String: Int64] = [:]
        for (index, channel) in channels.enumerated() {
            let base = index * stride
            let replicated = capped ? try results[base + 2].get().string : nil
            var start = Self.readable(lastSeq: try results[base].get().int ?? 0, replicated: replicated)
            var page = try results[base + 1].get()
            var pageSize = firstPage
            var read = 0
            while true {
                let (count, metOlder) = try Self.walkBack(page, before: millis, start: &start)
                read += count
                guard !metOlder, count == pageSize, read < limit, start > 0 else { break }
                pageSize = min(limit - read, 200)
                let log = RelayKeys.Channel(channel).log
                page = try await self.timed("seq") {
                    try await self.redis.execute(RedisCommand("XREVRANGE", key: log, [log, "\(start)-0", "-", "COUNT", pageSize]))
                }
            }
            seqs[channel] = start
        }
        return seqs
    }

    /// Walks an `XREVRANGE` page, newest first, moving `start` below each event made at or after
    /// `millis`, up to the first one made before it.
    /// - Returns: the events walked past, and whether an older one ended the walk.
    private static func walkBack(_ page: RESPValue, before millis: Int64, start: inout Int64) throws -> (count: Int, metOlder: Bool) {
        let rows = page.array ?? []
        for (count, row) in rows.enumerated() {
            guard let entry = row.array, entry.count == 2, let seq = entry[0].bytes.flatMap({ Self.seq(ofEntryID: $0) }),
                let fields = entry[1].array
            else { throw RedisError(.protocolViolation, "malformed stream entry in an XREVRANGE reply") }
            let json = stride(from: 0, to: fields.count - 1, by: 2).first { fields[$0].bytes == [UInt8(ascii: "e")] }
                .flatMap { fields[$0 + 1].bytes }
            if let json, let createdAt = Self.createdAt(ofEvent: json), createdAt < millis { return (count, true) }
            start = seq - 1
        }
        return (rows.count, false)
    }

    /// An event's `created_at`, read from its JSON.
    static func createdAt(ofEvent json: [UInt8]) -> Int64? {
        json.withUnsafeBytes { bytes in
            EventJSON.field(.createdAt, in: bytes).flatMap { Int64(String(decoding: $0, as: UTF8.self)) }
        }
    }

    /// The seq of `user`'s latest `member_joined` in the channel, from its membership record
    /// (``MembershipRecord``), or, in a channel made before those were kept, read back from the
    /// log's end a page at a time; the seq after the log's end if the log has none within
    /// `maxPages` pages (a join that old is not news to a live connection).
    func joinSeq(channel id: String, user: String, maxPages: Int = 50) async throws -> Int64 {
        let keys = RelayKeys.Channel(id)
        let record = try await self.timed("join") {
            try await self.redis.execute(RedisCommand("HGET", key: keys.membership, [keys.membership, user]))
        }
        if let join = record.string.flatMap(MembershipRecord.init)?.currentJoin { return join }
        // Channels made before membership was recorded: the log, newest first.
        let log = keys.log
        var end = "+"
        var last: Int64?
        for _ in 0..<maxPages {
            let page = try await self.timed("join") { try await self.redis.streamReverseRange(log, from: end, to: "-", count: 200) }
            for entry in page {
                guard let seq = Self.seq(ofEntryID: entry.id.utf8) else { continue }
                if last == nil { last = seq }
                if let json = entry["e"], EventMembership.of(json: json) == .joined(user: user) {
                    return seq
                }
            }
            guard page.count == 200, let oldest = page.last.flatMap({ Self.seq(ofEntryID: $0.id.utf8) }), oldest > 1 else { break }
            end = "\(oldest - 1)-0"
        }
        return (last ?? 0) + 1
    }
}
