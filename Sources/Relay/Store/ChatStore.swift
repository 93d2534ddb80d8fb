import COpenSSL
import NIOCore
import RedisClient

/// The chat domain on Redis: channels, members, the per-channel log, read cursors, presence.
///
/// Every write that must be atomic is one Lua script on the keys of one channel. Results are
/// JSON text, spliced into responses as they come from Redis: events are never decoded and
/// re-encoded on their way through.
struct ChatStore: Sendable {
    let redis: RedisClient
    let limits: RelayLimits
    let metrics: RelayMetrics

    // MARK: Channels

    enum ChannelType: String, Sendable {
        case dm, group
    }

    /// Creates a channel, or finds the DM of the same pair.
    ///
    /// - Returns: whether it was created, and the channel as `GET /channels/{id}` shows it.
    func createChannel(
        type: ChannelType,
        id requestedID: String?,
        name: String,
        creator: String,
        members: [String]
    ) async throws -> (created: Bool, channel: String) {
        var unique = [creator]
        var seen: Set<String> = [creator]
        for member in members where seen.insert(member).inserted { unique.append(member) }
        let id: String
        switch type {
        case .dm:
            guard unique.count == 2 else { throw APIError.badRequest("a dm has exactly two distinct members") }
            guard requestedID == nil else { throw APIError.badRequest("a dm's id is derived from its members") }
            id = Self.dmID(unique[0], unique[1])
        case .group:
            guard !(requestedID ?? "").hasPrefix("dm-") else {
                throw APIError.badRequest("ids starting with dm- are kept for direct messages")
            }
            guard unique.count <= self.limits.maxGroupMembers else {
                throw APIError.badRequest("a group has at most \(self.limits.maxGroupMembers) members")
            }
            id = requestedID ?? Identifier.make(prefix: "g")
        }
        let keys = RelayKeys.Channel(id)
        // The users' indexes first: should the script then fail, a stale index entry is
        // filtered out on read, whereas a missing one would hide a channel.
        try await self.indexChannel(id, for: unique)
        let reply = try await self.timed("channel_create") {
            try await self.redis.run(
                RelayScripts.createChannel,
                keys: [keys.meta, keys.members, keys.seq, keys.log],
                arguments: [id, type.rawValue, name, creator, keys.topic] + unique
            )
        }
        let created = reply.array?.first?.int == 1
        if created { self.metrics.appended(unique.count) }
        return (created, try await self.channel(id, caller: creator))
    }

    /// The channel as `GET /channels/{id}` shows it.
    ///
    /// - Throws: `not_found` if there is none, `forbidden` if `caller` is not a member.
    func channel(_ id: String, caller: String) async throws -> String {
        let keys = RelayKeys.Channel(id)
        let results = try await self.timed("channel") {
            try await self.redis.pipeline([
                RedisCommand("HGETALL", key: keys.meta, [keys.meta]),
                RedisCommand("SISMEMBER", key: keys.members, [keys.members, caller]),
                RedisCommand("SMEMBERS", key: keys.members, [keys.members]),
                RedisCommand("GET", key: keys.seq, [keys.seq]),
            ])
        }
        let meta = try Self.hash(results[0].get())
        guard !meta.isEmpty else { throw APIError(.notFound, "no such channel") }
        guard try results[1].get().int == 1 else { throw APIError(.forbidden, "not a member of this channel") }
        let members = try results[2].get().array?.compactMap(\.string).sorted() ?? []
        let lastSeq = try results[3].get().int ?? 0
        var json = "{\"id\":\"\(id)\",\"type\":\"\(meta["type"] ?? "group")\",\"name\":\(Self.name(meta["name"]))"
        json += ",\"members\":[" + members.map { "\"\($0)\"" }.joined(separator: ",") + "]"
        json += ",\"member_count\":\(members.count),\"last_seq\":\(lastSeq),\"created_at\":\(meta["created_at"] ?? "0")"
        json += ",\"creator\":\"\(meta["creator"] ?? "")\"}"
        return json
    }

    /// The caller's channels with their read state for the caller's session.
    func listChannels(user: String, session: String) async throws -> String {
        let ids = try await self.timed("channels") { try await self.redis.setMembers(RelayKeys.User(user).channels) }.sorted()
        guard !ids.isEmpty else { return "{\"channels\":[]}" }
        var commands = [RedisCommand]()
        commands.reserveCapacity(ids.count * 4)
        for id in ids {
            let keys = RelayKeys.Channel(id)
            commands.append(RedisCommand("HMGET", key: keys.meta, [keys.meta, "type", "name"]))
            commands.append(RedisCommand("SISMEMBER", key: keys.members, [keys.members, user]))
            commands.append(RedisCommand("SCARD", key: keys.members, [keys.members]))
            commands.append(RedisCommand("GET", key: keys.seq, [keys.seq]))
            commands.append(RedisCommand("HGET", key: keys.reads, [keys.reads, "\(user)/\(session)"]))
        }
        let results = try await self.timed("channels") { try await self.redis.pipeline(commands) }
        var entries = [String]()
        for (index, id) in ids.enumerated() {
            let base = index * 5
            let meta = try results[base].get().array ?? []
            // An index entry whose channel does not list the user (left, or a creation that
            // failed, or one still under way) is skipped, not deleted: deleting it could race
            // with the script that is about to make the user a member.
            guard try results[base + 1].get().int == 1, let type = meta.first?.string else { continue }
            let name = meta.count > 1 ? meta[1].string : nil
            let count = try results[base + 2].get().int ?? 0
            let lastSeq = try results[base + 3].get().int ?? 0
            let lastRead = min(try results[base + 4].get().int ?? 0, lastSeq)
            entries.append(
                "{\"id\":\"\(id)\",\"type\":\"\(type)\",\"name\":\(Self.name(name)),\"member_count\":\(count)"
                    + ",\"last_seq\":\(lastSeq),\"last_read_seq\":\(lastRead),\"unread\":\(lastSeq - lastRead)}"
            )
        }
        return "{\"channels\":[" + entries.joined(separator: ",") + "]}"
    }

    /// Adds members to a group; logs one `member_joined` per new member.
    ///
    /// - Returns: the new events (empty if everyone was a member already).
    func addMembers(channel id: String, actor: String, users: [String]) async throws -> [String] {
        let keys = RelayKeys.Channel(id)
        try await self.indexChannel(id, for: users)
        let reply = try await self.timed("members_add") {
            try await self.redis.run(
                RelayScripts.addMembers,
                keys: [keys.meta, keys.members, keys.seq, keys.log],
                arguments: [actor, id, keys.topic, self.limits.maxGroupMembers] + users
            )
        }
        let events = reply.array?.compactMap(\.string) ?? []
        self.metrics.appended(events.count)
        return events
    }

    /// Removes a member (itself, or anyone if the actor created the channel); logs `member_left`.
    func removeMember(channel id: String, actor: String, user: String) async throws -> String {
        let keys = RelayKeys.Channel(id)
        let reply = try await self.timed("members_remove") {
            try await self.redis.run(
                RelayScripts.removeMember,
                keys: [keys.meta, keys.members, keys.seq, keys.log],
                arguments: [actor, id, keys.topic, user]
            )
        }
        self.metrics.appended()
        await self.unindexChannel(id, for: user)
        return try Self.string(reply)
    }

    /// Drops the channel from the user's index, unless a concurrent add made the user a member again.
    private func unindexChannel(_ id: String, for user: String) async {
        let index = RelayKeys.User(user).channels
        let members = RelayKeys.Channel(id).members
        _ = try? await self.redis.setRemove(index, [id])
        if (try? await self.redis.isMember(members, user)) == true {
            _ = try? await self.redis.setAdd(index, [id])
        }
    }

    private func indexChannel(_ id: String, for users: [String]) async throws {
        let commands = users.map { user in
            let key = RelayKeys.User(user).channels
            return RedisCommand("SADD", key: key, [key, id])
        }
        let results = try await self.timed("index") { try await self.redis.pipeline(commands) }
        for result in results { _ = try result.get() }
    }

    // MARK: Messages

    /// Appends a message, or returns the first event of the same `(sender, client_msg_id)`.
    func send(channel id: String, sender: String, clientMessageID: String, text: String) async throws -> (created: Bool, event: String) {
        let keys = RelayKeys.Channel(id)
        let messageID = Identifier.make(prefix: "m")
        let body =
            "\"type\":\"message\",\"message_id\":\"\(messageID)\",\"sender_id\":\"\(sender)\",\"text\":\(JSONText.quoted(text))"
            + ",\"client_msg_id\":\(JSONText.quoted(clientMessageID))"
        let reply = try await self.timed("send") {
            try await self.redis.run(
                RelayScripts.send,
                keys: [
                    keys.meta, keys.members, keys.seq, keys.log, keys.messages,
                    keys.dedup(sender: sender, clientMessageID: clientMessageID),
                ],
                arguments: [sender, messageID, body, id, keys.topic, self.limits.dedupWindowSeconds]
            )
        }
        guard let parts = reply.array, parts.count == 2, let event = parts[1].string else {
            throw RedisError(.protocolViolation, "send.lua answered \(reply)")
        }
        let created = parts[0].int == 1
        if created { self.metrics.appended() }
        return (created, event)
    }

    /// Logs an `edit` of the sender's message.
    func edit(channel id: String, sender: String, messageID: String, text: String) async throws -> String {
        let body =
            "\"type\":\"edit\",\"message_id\":\"\(messageID)\",\"sender_id\":\"\(sender)\",\"text\":\(JSONText.quoted(text))"
        return try await self.change(RelayScripts.edit, "edit", channel: id, sender: sender, messageID: messageID, body: body)
    }

    /// Logs a `delete` of the sender's message.
    func delete(channel id: String, sender: String, messageID: String) async throws -> String {
        let body = "\"type\":\"delete\",\"message_id\":\"\(messageID)\",\"sender_id\":\"\(sender)\""
        return try await self.change(RelayScripts.delete, "delete", channel: id, sender: sender, messageID: messageID, body: body)
    }

    private func change(
        _ script: RedisScript,
        _ name: String,
        channel id: String,
        sender: String,
        messageID: String,
        body: String
    ) async throws -> String {
        let keys = RelayKeys.Channel(id)
        let reply = try await self.timed(name) {
            try await self.redis.run(
                script,
                keys: [keys.meta, keys.members, keys.seq, keys.log, keys.messages],
                arguments: [sender, messageID, body, id, keys.topic]
            )
        }
        self.metrics.appended()
        return try Self.string(reply)
    }

    // MARK: History

    enum HistoryRange {
        case latest
        case before(Int64)
        case after(Int64)
        case between(after: Int64, before: Int64)
    }

    /// Up to `limit` events of the range, ascending, and whether more lie beyond the page.
    func history(channel id: String, caller: String, range: HistoryRange, limit: Int) async throws -> (events: [String], hasMore: Bool) {
        try await self.requireMember(channel: id, user: caller)
        let log = RelayKeys.Channel(id).log
        let count = limit + 1
        var entries: [RedisStreamEntry]
        var descending = false
        switch range {
        case .latest:
            entries = try await self.timed("history") { try await self.redis.streamReverseRange(log, from: "+", to: "-", count: count) }
            descending = true
        case .before(let seq):
            guard seq > 1 else { return ([], false) }
            entries = try await self.timed("history") {
                try await self.redis.streamReverseRange(log, from: "\(seq - 1)-0", to: "-", count: count)
            }
            descending = true
        case .after(let seq):
            entries = try await self.timed("history") { try await self.redis.streamRange(log, from: "\(seq + 1)-0", to: "+", count: count) }
        case .between(let after, let before):
            guard before - after > 1 else { return ([], false) }
            entries = try await self.timed("history") {
                try await self.redis.streamRange(log, from: "\(after + 1)-0", to: "\(before - 1)-0", count: count)
            }
        }
        let hasMore = entries.count > limit
        if hasMore { entries.removeLast() }
        if descending { entries.reverse() }
        return (entries.compactMap { $0["e"].map { String(buffer: $0) } }, hasMore)
    }

    /// Events after `seq`, ascending, up to `limit` (for replay; membership is the caller's concern).
    func events(channel id: String, after seq: Int64, limit: Int) async throws -> [(seq: Int64, json: String)] {
        let log = RelayKeys.Channel(id).log
        let entries = try await self.timed("replay") { try await self.redis.streamRange(log, from: "\(seq + 1)-0", to: "+", count: limit) }
        return entries.compactMap { entry in
            guard let seq = Int64(entry.id.prefix { $0 != "-" }), let json = entry["e"] else { return nil }
            return (seq, String(buffer: json))
        }
    }

    /// The channel's last seq (0 for a channel with no events, or none).
    func lastSeq(channel id: String) async throws -> Int64 {
        let reply = try await self.timed("seq") { try await self.redis.execute("GET", RelayKeys.Channel(id).seq) }
        return reply.string.flatMap { Int64($0) } ?? 0
    }

    /// Each channel's last seq, in one round trip.
    func lastSeqs(channels ids: [String]) async throws -> [String: Int64] {
        guard !ids.isEmpty else { return [:] }
        let commands = ids.map { id in
            let seq = RelayKeys.Channel(id).seq
            return RedisCommand("GET", key: seq, [seq])
        }
        let results = try await self.timed("seq") { try await self.redis.pipeline(commands) }
        var seqs: [String: Int64] = [:]
        for (id, result) in zip(ids, results) {
            seqs[id] = try result.get().string.flatMap { Int64($0) } ?? 0
        }
        return seqs
    }

    /// The channels `user` is a member of (the index, checked against each channel's members).
    func memberChannels(user: String) async throws -> [String] {
        let ids = try await self.timed("channels") { try await self.redis.setMembers(RelayKeys.User(user).channels) }
        guard !ids.isEmpty else { return [] }
        let commands = ids.map { id in
            let members = RelayKeys.Channel(id).members
            return RedisCommand("SISMEMBER", key: members, [members, user])
        }
        let results = try await self.timed("channels") { try await self.redis.pipeline(commands) }
        return zip(ids, results).compactMap { id, result in (try? result.get().int) == 1 ? id : nil }
    }

    func requireMember(channel id: String, user: String) async throws {
        let keys = RelayKeys.Channel(id)
        let results = try await self.timed("membership") {
            try await self.redis.pipeline([
                RedisCommand("EXISTS", key: keys.meta, [keys.meta]),
                RedisCommand("SISMEMBER", key: keys.members, [keys.members, user]),
            ])
        }
        guard try results[0].get().int == 1 else { throw APIError(.notFound, "no such channel") }
        guard try results[1].get().int == 1 else { throw APIError(.forbidden, "not a member of this channel") }
    }

    // MARK: Read cursors and presence

    /// Moves the (user, session) read cursor up to `seq`; never back.
    func markRead(channel id: String, user: String, session: String, seq: Int64) async throws -> Int64 {
        let keys = RelayKeys.Channel(id)
        let reply = try await self.timed("read") {
            try await self.redis.run(
                RelayScripts.read,
                keys: [keys.meta, keys.members, keys.seq, keys.reads],
                arguments: [user, session, seq]
            )
        }
        guard let value = reply.int else { throw RedisError(.protocolViolation, "read.lua answered \(reply)") }
        return value
    }

    /// Whether each user has a live connection somewhere.
    func presence(of users: [String]) async throws -> [Bool] {
        let commands = users.map { user in
            let key = RelayKeys.User(user).presence
            return RedisCommand("EXISTS", key: key, [key])
        }
        return try await self.timed("presence") { try await self.redis.pipeline(commands) }.map { try $0.get().int == 1 }
    }

    // MARK: Helpers

    /// Runs a Redis operation, recording its latency.
    func timed<T>(_ operation: String, _ body: () async throws -> T) async throws -> T {
        let start = ContinuousClock.now
        defer { self.metrics.redisLatency(operation, ContinuousClock.now - start) }
        return try await body()
    }

    private static func string(_ reply: RESPValue) throws -> String {
        guard let text = reply.string else { throw RedisError(.protocolViolation, "a script answered \(reply)") }
        return text
    }

    private static func hash(_ reply: RESPValue) -> [String: String] {
        let elements = reply.array ?? []
        var result = [String: String]()
        var index = 0
        while index + 1 < elements.count {
            if let field = elements[index].string, let value = elements[index + 1].string { result[field] = value }
            index += 2
        }
        return result
    }

    private static func name(_ name: String?) -> String {
        guard let name, !name.isEmpty else { return "null" }
        return JSONText.quoted(name)
    }

    /// A DM's id: the same for the same pair, whichever way round.
    static func dmID(_ first: String, _ second: String) -> String {
        let pair = Array((first < second ? "\(first)\n\(second)" : "\(second)\n\(first)").utf8)
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = pair.withUnsafeBytes { bytes in
            EVP_Digest(bytes.baseAddress, bytes.count, &digest, &length, EVP_sha256(), nil)
        }
        precondition(ok == 1, "EVP_Digest(SHA-256) failed")
        return "dm-"
            + digest.prefix(16).map { byte in
                let hex = String(byte, radix: 16)
                return byte < 16 ? "0" + hex : hex
            }.joined()
    }
}
