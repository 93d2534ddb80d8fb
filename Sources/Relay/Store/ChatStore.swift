import COpenSSL
import NIOCore
import RedisClient
import Synchronization

/// The chat domain on Redis: channels, members, the per-channel log, read cursors, presence.
///
/// Every write that must be atomic is one Lua script on the keys of one channel. The store
/// answers in domain values (``ChatChannel``, ``HistoryPage``, …) and throws ``ChatError`` for what
/// the caller did wrong, or a `RedisError` when Redis cannot be reached. Events stay the JSON
/// text the scripts wrote: they are never decoded and re-encoded on their way through.
struct ChatStore: Sendable {
    let redis: RedisClient
    let limits: RelayLimits
    let metrics: RelayMetrics
    let scripts: RelayScripts
    /// Index entries waiting to be checked again (``checkIndexLater(_:for:written:)``).
    let indexRepairs = IndexRepairs()

    init(redis: RedisClient, limits: RelayLimits, metrics: RelayMetrics, retention: RelayRetention = RelayRetention()) {
        self.redis = redis
        self.limits = limits
        self.metrics = metrics
        // With replicas to wait for, events go out live only once they hold the write.
        self.scripts = RelayScripts(retention: retention, publishing: redis.configuration.replicaWait == 0)
    }

    // MARK: Channels

    /// Creates a channel, or finds the DM of the same pair.
    ///
    /// - Returns: whether it was created, and the channel as its creator sees it.
    func createChannel(
        type: ChannelType,
        id requestedID: String?,
        name: String,
        creator: String,
        members: [String]
    ) async throws -> (created: Bool, channel: ChatChannel) {
        var unique = [creator]
        var seen: Set<String> = [creator]
        for member in members where seen.insert(member).inserted { unique.append(member) }
        let id: String
        switch type {
        case .dm:
            guard unique.count == 2 else { throw ChatError.badRequest("a dm has exactly two distinct members") }
            guard requestedID == nil else { throw ChatError.badRequest("a dm's id is derived from its members") }
            id = Self.dmID(unique[0], unique[1])
        case .group:
            guard !ChannelType.isDirectMessage(requestedID ?? "") else {
                throw ChatError.badRequest("ids starting with dm- are kept for direct messages")
            }
            guard unique.count <= self.limits.maxGroupMembers else {
                throw ChatError.badRequest("a group has at most \(self.limits.maxGroupMembers) members")
            }
            id = requestedID ?? Identifier.make(prefix: "g")
        }
        let keys = RelayKeys.Channel(id)
        let reply = try await self.runIndexing(
            self.scripts.createChannel,
            "channel_create",
            channel: id,
            members: unique,
            arguments: [id, type.rawValue, name, creator, keys.topic] + unique
        )
        let created = reply.array?.first?.int == 1
        if created { self.metrics.appended(unique.count) }
        return (created, try await self.channel(id, caller: creator))
    }

    /// The channel as `GET /channels/{id}` shows it to `caller`.
    ///
    /// - Throws: ``ChatError/noSuchChannel`` if there is none, ``ChatError/notMember(channel:)``
    ///   if `caller` is not a member.
    func channel(_ id: String, caller: String) async throws -> ChatChannel {
        let keys = RelayKeys.Channel(id)
        let results = try await self.timed("channel") {
            try await self.redis.pipeline([
                RedisCommand("HGETALL", key: keys.meta, [keys.meta]),
                RedisCommand("SISMEMBER", key: keys.members, [keys.members, caller]),
                RedisCommand("SCARD", key: keys.members, [keys.members]),
                RedisCommand("GET", key: keys.seq, [keys.seq]),
                RedisCommand("XRANGE", key: keys.log, [keys.log, "-", "+", "COUNT", "1"]),
            ])
        }
        let meta = try Self.hash(results[0].get())
        guard !meta.isEmpty else { throw ChatError.noSuchChannel }
        guard try results[1].get().int == 1 else { throw ChatError.notMember(channel: id) }
        var memberCount = Int(try results[2].get().int ?? 0)
        let storedLastSeq = try results[3].get().int ?? 0
        let firstSeq = Self.firstSeq(try results[4].get(), lastSeq: storedLastSeq)
        let lastSeq = Self.readable(lastSeq: storedLastSeq, replicated: meta[RelayKeys.Channel.replicatedSeq])
        var members: [String]?
        if memberCount <= ChatChannel.maxListedMembers {
            let listed = try await self.timed("channel") { try await self.redis.setMembers(keys.members) }.sorted()
            if listed.count <= ChatChannel.maxListedMembers {
                members = listed
                memberCount = listed.count
            }
        }
        let name = meta["name"].flatMap { $0.isEmpty ? nil : $0 }
        return ChatChannel(
            id: id,
            type: ChannelType(rawValue: meta["type"] ?? "") ?? .group,
            name: name,
            members: members,
            memberCount: memberCount,
            firstSeq: firstSeq,
            lastSeq: lastSeq,
            createdAt: Int64(meta["created_at"] ?? "") ?? 0,
            creator: meta["creator"] ?? ""
        )
    }

    /// A page of the channel's members, for a member: up to `limit` ids from `cursor` (`nil`:
    /// the start). A walk from no cursor until `nextCursor` is `nil` lists every user that was
    /// a member throughout at least once (`SSCAN`'s guarantee), whatever the limits of its pages
    /// and whoever joins or leaves meanwhile.
    ///
    /// A page is made of whole `SSCAN` steps, and the cursor is the next step's (`S`). A step
    /// reads whole hash buckets, so it may overflow the page by a bucket's few ids; the same step
    /// with a smaller `COUNT` reads fewer buckets. Only when the first step of a page overflows
    /// it whatever its `COUNT` (one bucket, or a small set `SSCAN` reads whole, holding more than
    /// `limit` ids) is a step split: the cursor `S:N:ID` says that step ran from `S` to `N` and
    /// handed out its ids up to `ID`, in sorted order. Running that step again skips the ids up
    /// to `ID` only if it read no further than `N`: then every id it finds lay in the buckets
    /// read before, and one up to `ID` was handed out. (Reading further, because the bucket's
    /// members left, it skips nothing: an id handed out again is allowed, one never handed out
    /// must not be skipped.)
    ///
    /// - Throws: `bad_request` for a cursor the relay did not make, and as ``requireMember(channel:user:)``.
    func members(channel id: String, caller: String, cursor: String?, limit: Int) async throws -> MembersPage {
        var scan: UInt64 = 0
        var split: (next: UInt64, last: String)?
        if let cursor {
            let parts = cursor.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            // Written as the relay writes it (no sign, no leading zero): the numbers' own spelling.
            func number(_ text: Substring) -> UInt64? { UInt64(text).flatMap { String($0) == text ? $0 : nil } }
            guard let value = number(parts[0]) else { throw ChatError.badRequest("cursor: not a cursor this API gave") }
            scan = value
            switch parts.count {
            case 1:
                break
            case 2:
                // `S:ID`, as relays before `S:N:ID` wrote it: from S again, skipping nothing.
                guard Identifier.isValid(parts[1]) else { throw ChatError.badRequest("cursor: not a cursor this API gave") }
            default:
                guard let next = number(parts[1]), Identifier.isValid(parts[2]) else {
                    throw ChatError.badRequest("cursor: not a cursor this API gave")
                }
                split = (next, String(parts[2]))
            }
        }
        try await self.requireMember(channel: id, user: caller)
        let key = RelayKeys.Channel(id).members
        var page: [String] = []
        if let split {
            // The split step's buckets again, one by one (COUNT 1 ends at the first bucket with
            // ids): ids of a bucket before N were read by that step, and those up to ID handed
            // out; a bucket past N (the table resized, or the step's ids left) skips nothing.
            var cursor = scan
            var batch: [String] = []
            for _ in 0..<(limit + 64) {
                let (next, ids) = try await self.scanMembers(key, from: cursor, count: 1)
                let inStep = Self.scanOrder(next) <= Self.scanOrder(split.next)
                batch += inStep ? ids.filter { $0 > split.last } : ids
                cursor = next
                if !inStep || next == split.next || next == 0 { break }
            }
            batch.sort()
            if batch.count > limit {
                let members = Array(batch.prefix(limit))
                return MembersPage(members: members, nextCursor: "\(scan):\(cursor):\(members[limit - 1])")
            }
            page = batch
            scan = cursor
            if scan == 0 { return MembersPage(members: page, nextCursor: nil) }
        }
        // A bounded number of steps: a sparse set may answer a step with few or no ids.
        for _ in 0..<16 where page.count < limit {
            let room = limit - page.count
            var count = room
            var (next, batch) = try await self.scanMembers(key, from: scan, count: count)
            for _ in 0..<3 where batch.count > room && count > 1 {
                count = max(1, count - (batch.count - room))
                (next, batch) = try await self.scanMembers(key, from: scan, count: count)
            }
            if batch.count > room {
                // The page ends before this step, or (first step) the step is split.
                guard page.isEmpty else { return MembersPage(members: page, nextCursor: "\(scan)") }
                let members = Array(batch.sorted().prefix(room))
                return MembersPage(members: members, nextCursor: "\(scan):\(next):\(members[room - 1])")
            }
            page += batch
            scan = next
            if scan == 0 { return MembersPage(members: page, nextCursor: nil) }
        }
        return MembersPage(members: page, nextCursor: "\(scan)")
    }

    /// One `SSCAN` step of `key` from `cursor`: the next cursor and the ids it read.
    private func scanMembers(_ key: String, from cursor: UInt64, count: Int) async throws -> (next: UInt64, ids: [String]) {
        let reply = try await self.timed("members") {
            try await self.redis.execute("SSCAN", key, "\(cursor)", "COUNT", "\(count)")
        }
        guard let parts = reply.array, parts.count == 2, let next = parts[0].string.flatMap({ UInt64($0) }) else {
            throw RedisError(.protocolViolation, "SSCAN answered \(reply)")
        }
        return (next, (parts[1].array ?? []).compactMap(\.string))
    }

    /// Where an `SSCAN` cursor lies in the scan's order, comparable across hash table sizes: Redis
    /// counts cursors up in reversed bit order, and 0, the end, lies past all others.
    static func scanOrder(_ cursor: UInt64) -> UInt64 {
        guard cursor != 0 else { return .max }
        var bits = cursor
        bits = ((bits >> 1) & 0x5555_5555_5555_5555) | ((bits & 0x5555_5555_5555_5555) << 1)
        bits = ((bits >> 2) & 0x3333_3333_3333_3333) | ((bits & 0x3333_3333_3333_3333) << 2)
        bits = ((bits >> 4) & 0x0F0F_0F0F_0F0F_0F0F) | ((bits & 0x0F0F_0F0F_0F0F_0F0F) << 4)
        return bits.byteSwapped
    }

    /// The caller's channels with their read state for the caller's session.
    func listChannels(user: String, session: String) async throws -> [ChannelSummary] {
        let ids = try await self.timed("channels") { try await self.redis.setMembers(RelayKeys.User(user).channels) }.sorted()
        guard !ids.isEmpty else { return [] }
        var commands = [RedisCommand]()
        commands.reserveCapacity(ids.count * 5)
        for id in ids {
            let keys = RelayKeys.Channel(id)
            commands.append(RedisCommand("HMGET", key: keys.meta, [keys.meta, "type", "name", RelayKeys.Channel.replicatedSeq]))
            commands.append(RedisCommand("SISMEMBER", key: keys.members, [keys.members, user]))
            commands.append(RedisCommand("SCARD", key: keys.members, [keys.members]))
            commands.append(RedisCommand("GET", key: keys.seq, [keys.seq]))
            commands.append(RedisCommand("HGET", key: keys.reads, [keys.reads, "\(user)/\(session)"]))
        }
        let results = try await self.timed("channels") { try await self.redis.pipeline(commands) }
        var entries = [ChannelSummary]()
        var stale = [String]()
        for (index, id) in ids.enumerated() {
            let base = index * 5
            let meta = try results[base].get().array ?? []
            guard try results[base + 1].get().int == 1, let type = meta.first?.string else {
                stale.append(id)
                continue
            }
            let name = meta.count > 1 ? meta[1].string.flatMap { $0.isEmpty ? nil : $0 } : nil
            let count = try results[base + 2].get().int ?? 0
            let lastSeq = Self.readable(lastSeq: try results[base + 3].get().int ?? 0, replicated: meta.count > 2 ? meta[2].string : nil)
            let lastRead = min(try results[base + 4].get().int ?? 0, lastSeq)
            entries.append(
                ChannelSummary(
                    id: id,
                    type: ChannelType(rawValue: type) ?? .group,
                    name: name,
                    memberCount: Int(count),
                    lastSeq: lastSeq,
                    lastReadSeq: lastRead
                )
            )
        }
        await self.dropStale(stale, for: user)
        return entries
    }

    /// Adds members to a group; logs one `member_joined` per new member.
    ///
    /// - Returns: the new events (empty if everyone was a member already).
    func addMembers(channel id: String, actor: String, users: [String]) async throws -> [String] {
        let reply = try await self.runIndexing(
            self.scripts.addMembers,
            "members_add",
            channel: id,
            members: users,
            arguments: [actor, id, RelayKeys.Channel(id).topic, self.limits.maxGroupMembers] + users
        )
        let events = reply.array?.compactMap(\.string) ?? []
        self.metrics.appended(events.count)
        return events
    }

    /// Runs a script that makes `users` members of channel `id` (`channel_create`,
    /// `members_add`), then adds the channel to their indexes: only once it has run, for a
    /// refused call (no such channel, not a member, a taken id) indexes no one; or after it
    /// failed `unavailable` (`--redis-wait`, replicas short), since it may have run and a retry
    /// would find nothing to do. Should it not have run, those entries are stale and dropped when
    /// next read. (An existing DM's pair is indexed too: a relay that stopped between a script
    /// and its index leaves none behind.)
    private func runIndexing(
        _ script: RedisScript,
        _ name: String,
        channel id: String,
        members users: [String],
        arguments: [any RedisArgument]
    ) async throws -> RESPValue {
        let reply: RESPValue
        do {
            reply = try await self.run(script, name, channel: id, keys: RelayKeys.Channel(id).membershipScriptKeys, arguments: arguments)
        } catch let error as RedisError where error.code == .unavailable {
            self.checkIndexLater(id, for: users, written: (try? await self.indexChannel(id, for: users)) != nil)
            throw error
        }
        do {
            try await self.indexChannel(id, for: users)
        } catch {
            self.checkIndexLater(id, for: users, written: false)
            throw error
        }
        self.checkIndexLater(id, for: users, written: true)
        return reply
    }

    /// Makes sure that the indexes of `users`, who may be members of channel `id` now, hold it
    /// after the call that made them so. The entry may not have been written (their shard down
    /// while the channel's was not), or written and lost (by a primary that took it and was then
    /// demoted). Without it their sockets never follow the channel and `GET /channels` does not
    /// list it, should the caller not retry the call. Until it is written, it is tried every
    /// second for a minute; then, where a failover can lose it (``rechecksIndex``),
    /// ``IndexRepairs/checks`` after it was written, it is written again for those still
    /// members. Whenever an entry was missing, their sockets read their channels again.
    /// Best effort: at most ``IndexRepairs/limit`` users' worth at a time, and lost with the relay.
    private func checkIndexLater(_ id: String, for users: [String], written: Bool) {
        let recheck = self.rechecksIndex
        guard !written || recheck else { return }
        let repairs = self.indexRepairs
        guard repairs.pending.add(users.count, ordering: .relaxed).newValue <= IndexRepairs.limit else {
            repairs.pending.subtract(users.count, ordering: .relaxed)
            return
        }
        Task {
            defer { repairs.pending.subtract(users.count, ordering: .relaxed) }
            let notifier = RealtimeNotifier(redis: self.redis)
            var attempts = 0
            var written = written
            while !written && attempts < IndexRepairs.attempts {
                attempts += 1
                try? await Task.sleep(for: IndexRepairs.interval)
                guard (try? await self.indexChannel(id, for: users)) != nil else { continue }
                written = true
                await notifier.channelsChanged(for: users)
            }
            guard written, recheck else { return }
            // Timed from the write, not the call: a write that took a while is checked as late.
            let writtenAt = ContinuousClock.now
            for check in IndexRepairs.checks {
                try? await Task.sleep(until: writtenAt + check)
                guard let found = try? await self.restoreIndex(id, for: users) else { continue }
                if !found.restored.isEmpty { await notifier.channelsChanged(for: found.restored) }
                // Those who left meanwhile may never have been told of their window: each
                // connection reads it from the join, once (one that has is not moved).
                await notifier.joined(channel: id, joins: found.left)
            }
        }
    }

    /// Whether an index entry, once written, can still be lost while the call that made its
    /// user a member stands: on a Redis Cluster (a user's index lives on another shard than the
    /// channel, whose primary may fail alone), or with replicas to wait for (the script waits
    /// for them, the index write after it does not). On one Redis without, a failover loses
    /// the call itself as readily (README: what `--redis-wait` buys), and rewriting the entry
    /// protects nothing: nothing is scheduled.
    private var rechecksIndex: Bool {
        self.redis.configuration.replicaWait > 0 || self.redis.isCluster
    }

    /// Adds channel `id` to the index of each of `users` that is still a member and lacks it.
    /// - Returns: those whose entry was missing, and those no longer members, each with its
    ///   latest recorded `member_joined`.
    private func restoreIndex(
        _ id: String,
        for users: [String]
    ) async throws -> (restored: [String], left: [(user: String, seq: Int64)]) {
        let keys = RelayKeys.Channel(id)
        var arguments: [any RedisArgument] = [keys.members]
        arguments.append(contentsOf: users)
        var records: [any RedisArgument] = [keys.membership]
        records.append(contentsOf: users)
        let replies = try await self.timed("index") {
            try await self.redis.pipeline([
                RedisCommand("SMISMEMBER", key: keys.members, arguments),
                RedisCommand("HMGET", key: keys.membership, records),
            ])
        }
        let inSet = try replies[0].get().array ?? []
        let recorded = try replies[1].get().array ?? []
        var stillMembers: [String] = []
        var left: [(user: String, seq: Int64)] = []
        for (index, user) in users.enumerated() {
            if index < inSet.count, inSet[index].int == 1 {
                stillMembers.append(user)
            } else if index < recorded.count, let join = recorded[index].string.flatMap(MembershipRecord.init)?.latestJoin {
                left.append((user, join))
            }
        }
        guard !stillMembers.isEmpty else { return ([], left) }
        let commands = stillMembers.map { user in
            let key = RelayKeys.User(user).channels
            return RedisCommand("SADD", key: key, [key, id])
        }
        let results = try await self.timed("index") { try await self.redis.pipeline(commands) }
        return (zip(stillMembers, results).filter { (try? $0.1.get())?.int == 1 }.map(\.0), left)
    }

    /// Removes a member (itself, or anyone if the actor created the channel); logs `member_left`.
    /// The channel leaves the user's index once the script ran, or after it failed `unavailable`
    /// (it may have run): the index keeps the entry if the user is still a member.
    func removeMember(channel id: String, actor: String, user: String) async throws -> String {
        let keys = RelayKeys.Channel(id)
        let reply: RESPValue
        do {
            reply = try await self.run(
                self.scripts.removeMember,
                "members_remove",
                channel: id,
                keys: keys.membershipScriptKeys,
                arguments: [actor, id, keys.topic, user]
            )
        } catch let error as RedisError where error.code == .unavailable {
            await self.unindexChannel(id, for: user)
            throw error
        }
        self.metrics.appended()
        await self.unindexChannel(id, for: user)
        return try Self.string(reply)
    }

    /// Drops the channel from the user's index, unless a concurrent add made the user a member
    /// again (that add indexes only after its script, so either its entry comes after this
    /// removal, or the check below sees the user a member and puts the entry back).
    private func unindexChannel(_ id: String, for user: String) async {
        let index = RelayKeys.User(user).channels
        let members = RelayKeys.Channel(id).members
        _ = try? await self.redis.setRemove(index, [id])
        if (try? await self.redis.isMember(members, user)) == true {
            _ = try? await self.redis.setAdd(index, [id])
        }
    }

    /// Removes index entries found stale on read (a channel that no longer lists the user),
    /// each in the same way as a removal, so that a concurrent add keeps its entry.
    private func dropStale(_ ids: [String], for user: String) async {
        for id in ids.prefix(100) {
            await self.unindexChannel(id, for: user)
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
        let call = self.sendCall(channel: id, sender: sender, clientMessageID: clientMessageID, text: text)
        let reply = try await self.run(self.scripts.send, call, "send", channel: id)
        let sent = try self.sent(reply)
        if !sent.created, !self.scripts.publishes, let seq = EventJSON.field(.seq, in: sent.event) {
            // A retry: the first attempt's event may never have gone out live (its replicas
            // did not answer in time). Sockets that have it drop it again.
            await self.publishLive([Array("\(seq) \(sent.event)".utf8)], channel: id)
        }
        return sent
    }

    /// ``send(channel:sender:clientMessageID:text:)`` for a caller on `eventLoop`, with no task
    /// and no future: false when the script cannot go out at once (see
    /// `RedisClient.runUnwaitedImmediately`); otherwise `then` is called once, on `eventLoop`,
    /// after this call.
    func sendImmediately(
        channel id: String,
        sender: String,
        clientMessageID: String,
        text: String,
        on eventLoop: any EventLoop,
        then: @escaping @Sendable (Result<(created: Bool, event: String), any Error>) -> Void
    ) -> Bool {
        // Waiting for replicas, then publishing, is the `async` path's.
        guard self.scripts.publishes else { return false }
        let call = self.sendCall(channel: id, sender: sender, clientMessageID: clientMessageID, text: text)
        let metrics = self.metrics
        // The reply is read where it lies: only the event is copied out of it.
        return self.redis.runUnwaitedImmediately(
            self.scripts.send,
            call,
            on: eventLoop,
            decode: { reply in
                let sent = try Self.sent(reply)
                if sent.created { metrics.appended() }
                return sent
            },
            then: self.timed("send", channel: id, then: then)
        )
    }

    /// A script's error reply as the ``ChatError`` it stands for; any other error as it is.
    private static func scriptError(_ error: any Error, channel: String) -> any Error {
        guard let error = error as? RedisError else { return error }
        return ChatError(script: error, channel: channel) ?? error
    }

    /// ``sent(_:)`` read in place.
    @Sendable private static func sent(_ reply: RESPReply) throws -> (created: Bool, event: String) {
        var cursor = reply.cursor
        guard case .array(count: 2)? = cursor.next(), case .integer(let created)? = cursor.next(),
            case .bulkString(let event)? = cursor.next()
        else { throw RedisError(.protocolViolation, "send.lua answered something other than {created, event}") }
        return (created == 1, String(decoding: event, as: UTF8.self))
    }

    /// `send.lua`'s `EVALSHA` for one message, its keys written into it as they are appended
    /// (no string is made of each).
    func sendCall(channel id: String, sender: String, clientMessageID: String, text: String) -> RedisCommand {
        let keys = RelayKeys.Channel(id)
        let messageID = Identifier.make(prefix: "m")
        var body = "\"type\":\"message\",\"message_id\":\""
        body.reserveCapacity(96 + messageID.utf8.count + sender.utf8.count + text.utf8.count + clientMessageID.utf8.count)
        body += messageID
        body += "\",\"sender_id\":\""
        body += sender
        body += "\",\"text\":"
        body += JSONText.quoted(text)
        body += ",\"client_msg_id\":"
        body += JSONText.quoted(clientMessageID)
        let keyNames = Self.sendKeyNames
        var command = RedisClient.evalsha(
            self.scripts.send,
            keyCount: keyNames.count,
            // A cluster routes it by the channel's slot: the channel's id is the hash tag of
            // every key of the script, and holds no brace, so its own slot is theirs.
            routedBy: id,
            bytes: 2 * keyNames.count * (id.utf8.count + 16) + body.utf8.count + 64,
            arguments: 7
        )
        for name in keyNames { keys.append(name, to: &command) }
        command.append(sender)
        command.append(messageID)
        command.append(body)
        command.append(id)
        keys.append(.topic, to: &command)
        RelayKeys.Channel.appendDedupEntry(sender: sender, clientMessageID: clientMessageID, to: &command)
        command.append(self.limits.dedupWindowSeconds)
        return command
    }

    /// `send.lua`'s keys, in its `KEYS` order.
    private static let sendKeyNames: [RelayKeys.Channel.Name] = [.meta, .members, .seq, .log, .messages, .dedup, .dedupExpiry]

    /// `send.lua`'s reply: whether the event is new, and the event.
    private func sent(_ reply: RESPValue) throws -> (created: Bool, event: String) {
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
        return try await self.change("edit", channel: id, sender: sender, messageID: messageID, body: body)
    }

    /// Logs a `delete` of the sender's message.
    func delete(channel id: String, sender: String, messageID: String) async throws -> String {
        let body = "\"type\":\"delete\",\"message_id\":\"\(messageID)\",\"sender_id\":\"\(sender)\""
        return try await self.change("delete", channel: id, sender: sender, messageID: messageID, body: body)
    }

    /// Logs an `edit` or a `delete` (`name`) of the sender's message: one script for both.
    private func change(
        _ name: String,
        channel id: String,
        sender: String,
        messageID: String,
        body: String
    ) async throws -> String {
        let keys = RelayKeys.Channel(id)
        let reply = try await self.run(
            self.scripts.change,
            name,
            channel: id,
            keys: [keys.meta, keys.members, keys.seq, keys.log, keys.messages],
            arguments: [sender, messageID, body, id, keys.topic, name]
        )
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

    /// Up to `limit` events of the range, ascending, whether more lie beyond the page, and where
    /// the log begins.
    func history(channel id: String, caller: String, range: HistoryRange, limit: Int) async throws -> HistoryPage {
        let keys = RelayKeys.Channel(id)
        let access = try await self.timed("history") {
            try await self.redis.pipeline([
                RedisCommand("HMGET", key: keys.meta, [keys.meta, "type", RelayKeys.Channel.replicatedSeq]),
                RedisCommand("SISMEMBER", key: keys.members, [keys.members, caller]),
                RedisCommand("GET", key: keys.seq, [keys.seq]),
                RedisCommand("XRANGE", key: keys.log, [keys.log, "-", "+", "COUNT", "1"]),
            ])
        }
        let meta = try access[0].get().array ?? []
        guard meta.first?.string != nil else { throw ChatError.noSuchChannel }
        guard try access[1].get().int == 1 else { throw ChatError.notMember(channel: id) }
        let firstSeq = Self.firstSeq(try access[3].get(), lastSeq: try access[2].get().int ?? 0)
        // With --redis-wait, the log is read no further than what replicas are known to hold.
        let end = meta.count > 1 ? meta[1].string.flatMap { Int64($0) } : nil
        let top = end.map { "\($0)-0" } ?? "+"
        let log = keys.log
        let count = limit + 1
        var entries: [RedisStreamEntry]
        var descending = false
        switch range {
        case .latest:
            entries = try await self.timed("history") { try await self.redis.streamReverseRange(log, from: top, to: "-", count: count) }
            descending = true
        case .before(let seq):
            guard seq > 1 else { return HistoryPage(events: [], hasMore: false, firstSeq: firstSeq) }
            let from = end.map { min($0, seq - 1) } ?? (seq - 1)
            entries = try await self.timed("history") {
                try await self.redis.streamReverseRange(log, from: "\(from)-0", to: "-", count: count)
            }
            descending = true
        case .after(let seq):
            entries = try await self.timed("history") { try await self.redis.streamRange(log, from: "\(seq + 1)-0", to: top, count: count) }
        case .between(let after, let before):
            guard before - after > 1 else { return HistoryPage(events: [], hasMore: false, firstSeq: firstSeq) }
            let to = end.map { min($0, before - 1) } ?? (before - 1)
            entries = try await self.timed("history") {
                try await self.redis.streamRange(log, from: "\(after + 1)-0", to: "\(to)-0", count: count)
            }
        }
        let hasMore = entries.count > limit
        if hasMore { entries.removeLast() }
        if descending { entries.reverse() }
        return HistoryPage(events: entries.compactMap { $0["e"].map { String(buffer: $0) } }, hasMore: hasMore, firstSeq: firstSeq)
    }

    /// Where a new connection starts following each of `user`'s channels, in one round trip: the
    /// channel's last seq, for each channel the user is a member of right after it. The seq is
    /// read before the membership, so that a removal between the two (its `member_left` after
    /// the seq) still reaches the connection, and a removal before both leaves the channel out:
    /// its `member_left` came before the connection started. With `--redis-wait` the seq is no
    /// later than the channel's `replicated_seq` (``readable(lastSeq:replicated:)``), so that an
    /// event a failover may still lose is not taken as seen. `complete` is false if some channel
    /// could not be asked (a shard down): it is left out.
    func anchors(channels ids: [String], user: String) async throws -> (seqs: [String: Int64], complete: Bool) {
        guard !ids.isEmpty else { return ([:], true) }
        let capped = !self.scripts.publishes
        let stride = capped ? 4 : 3
        var commands = [RedisCommand]()
        commands.reserveCapacity(ids.count * stride)
        for id in ids {
            let keys = RelayKeys.Channel(id)
            commands.append(RedisCommand("GET", key: keys.seq, [keys.seq]))
            commands.append(RedisCommand("HGET", key: keys.membership, [keys.membership, user]))
            commands.append(RedisCommand("SISMEMBER", key: keys.members, [keys.members, user]))
            if capped { commands.append(keys.replicatedSeqCommand) }
        }
        let results = try await self.timed("seq") { try await self.redis.pipeline(commands) }
        var seqs: [String: Int64] = [:]
        var complete = true
        for (index, id) in ids.enumerated() {
            let base = index * stride
            guard case .success(let seqReply) = results[base], case .success(let record) = results[base + 1],
                case .success(let inMemberSet) = results[base + 2]
            else {
                complete = false
                continue
            }
            var replicated: String?
            if capped {
                guard case .success(let reply) = results[base + 3] else {
                    complete = false
                    continue
                }
                replicated = reply.string
            }
            let seq = Self.readable(lastSeq: seqReply.string.flatMap { Int64($0) } ?? 0, replicated: replicated)
            // Channels made before membership was recorded have no record: the set says.
            let member = record.string.flatMap(MembershipRecord.init)?.isMember(after: seq) ?? (inMemberSet.int == 1)
            if member { seqs[id] = seq }
        }
        return (seqs, complete)
    }

    /// The channels `user` is a member of (the index, checked against each channel's members).
    /// `complete` is false if some could not be checked (a shard down): they are left out.
    func memberChannels(user: String) async throws -> (channels: [String], complete: Bool) {
        let ids = try await self.timed("channels") { try await self.redis.setMembers(RelayKeys.User(user).channels) }
        guard !ids.isEmpty else { return ([], true) }
        let commands = ids.map { id in
            let members = RelayKeys.Channel(id).members
            return RedisCommand("SISMEMBER", key: members, [members, user])
        }
        let results = try await self.timed("channels") { try await self.redis.pipeline(commands) }
        var channels = [String]()
        var stale = [String]()
        var complete = true
        for (id, result) in zip(ids, results) {
            switch result {
            case .success(let reply) where reply.int == 1: channels.append(id)
            case .success: stale.append(id)
            case .failure: complete = false
            }
        }
        await self.dropStale(stale, for: user)
        return (channels, complete)
    }

    /// - Throws: ``ChatError/noSuchChannel``, or ``ChatError/notMember(channel:)`` (a DM's
    ///   non-member gets the same as for no channel).
    func requireMember(channel id: String, user: String) async throws {
        let keys = RelayKeys.Channel(id)
        let results = try await self.timed("membership") {
            try await self.redis.pipeline([
                RedisCommand("EXISTS", key: keys.meta, [keys.meta]),
                RedisCommand("SISMEMBER", key: keys.members, [keys.members, user]),
            ])
        }
        guard try results[0].get().int == 1 else { throw ChatError.noSuchChannel }
        guard try results[1].get().int == 1 else { throw ChatError.notMember(channel: id) }
    }

    // MARK: Read cursors and presence

    /// Moves the (user, session) read cursor up to `seq`; never back. The user's other sockets
    /// of that session (on any relay) are told where it stands, so that another tab's unread
    /// count follows: `read <connection> <session> <channel> <seq>` on the user's topic, best
    /// effort; `connection` (the socket that asked, `-` for REST) is not told again.
    func markRead(channel id: String, user: String, session: String, seq: Int64, connection: String = "-") async throws -> Int64 {
        let keys = RelayKeys.Channel(id)
        let reply = try await self.run(
            self.scripts.read,
            "read",
            channel: id,
            keys: [keys.meta, keys.members, keys.seq, keys.reads],
            arguments: [user, session, seq]
        )
        guard let value = reply.int else { throw RedisError(.protocolViolation, "read.lua answered \(reply)") }
        // Above the seq read: the cursor was there already, and the other sockets show it.
        guard value <= seq else { return value }
        let topic = RelayKeys.User(user).topic
        _ = try? await self.redis.execute(RedisCommand("SPUBLISH", key: topic, [topic, "read \(connection) \(session) \(id) \(value)"]))
        return value
    }

    /// ``markRead(channel:user:session:seq:connection:)`` for a caller on `eventLoop`, with no
    /// task and no future: false when the script cannot go out at once (see
    /// `RedisClient.runUnwaitedImmediately`); otherwise `then` is called once, on `eventLoop`,
    /// after this call. The notice to the session's other sockets goes out as the answer does,
    /// not before it.
    func markReadImmediately(
        channel id: String,
        user: String,
        session: String,
        seq: Int64,
        connection: String,
        on eventLoop: any EventLoop,
        then: @escaping @Sendable (Result<Int64, any Error>) -> Void
    ) -> Bool {
        // Waiting for replicas is the `async` path's.
        guard self.scripts.publishes else { return false }
        let keys = RelayKeys.Channel(id)
        let redis = self.redis
        let answer = self.timed("read", channel: id, then: then)
        return redis.runUnwaitedImmediately(
            self.scripts.read,
            RedisClient.evalsha(
                self.scripts.read,
                keys: [keys.meta, keys.members, keys.seq, keys.reads],
                arguments: [user, session, seq]
            ),
            on: eventLoop,
            decode: Self.readCursor
        ) { result in
            // Above the seq read: the cursor was there already, and the other sockets show it.
            if case .success(let value) = result, value <= seq {
                let topic = RelayKeys.User(user).topic
                let notice = RedisCommand("SPUBLISH", key: topic, [topic, "read \(connection) \(session) \(id) \(value)"])
                if redis.executeImmediately(notice, on: eventLoop, decode: { _ in }) == nil {
                    Task { _ = try? await redis.execute(notice) }
                }
            }
            answer(result)
        }
    }

    /// `read.lua`'s reply, the cursor, read in place.
    @Sendable private static func readCursor(_ reply: RESPReply) throws -> Int64 {
        var cursor = reply.cursor
        guard case .integer(let value)? = cursor.next() else {
            throw RedisError(.protocolViolation, "read.lua answered something other than an integer")
        }
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

    /// ``timed(_:_:)`` for an operation answered by a future (nil: none started): its latency
    /// runs until the future completes, with a reply or an error.
    func timed<T>(_ operation: String, _ body: () -> EventLoopFuture<T>?) -> EventLoopFuture<T>? {
        let start = ContinuousClock.now
        guard let future = body() else { return nil }
        let metrics = self.metrics
        future.whenComplete { _ in metrics.redisLatency(operation, ContinuousClock.now - start) }
        return future
    }

    /// ``timed(_:_:)`` for a script of channel `channel` answered through a callback: what is
    /// handed to the returned callback goes on to `then`, its error replies as ``ChatError``s,
    /// once its latency is recorded.
    func timed<T>(
        _ operation: String,
        channel: String,
        then: @escaping @Sendable (Result<T, any Error>) -> Void
    ) -> @Sendable (Result<T, any Error>) -> Void {
        let start = ContinuousClock.now
        let metrics = self.metrics
        return { result in
            metrics.redisLatency(operation, ContinuousClock.now - start)
            then(result.mapError { Self.scriptError($0, channel: channel) })
        }
    }

    /// Runs a script of channel `channel`, turning its error replies into ``ChatError``s.
    ///
    /// When the scripts do not publish (``RelayScripts/publishes``), the client has
    /// waited for the replicas by the time the script's answer is here: its events go out live
    /// now, and never when the replicas did not answer in time.
    private func run(
        _ script: RedisScript,
        _ name: String,
        channel: String,
        keys: [String],
        arguments: [any RedisArgument]
    ) async throws -> RESPValue {
        try await self.run(script, RedisClient.evalsha(script, keys: keys, arguments: arguments), name, channel: channel)
    }

    /// ``run(_:_:channel:keys:arguments:)`` with its `EVALSHA` command made.
    private func run(_ script: RedisScript, _ evalsha: RedisCommand, _ name: String, channel: String) async throws -> RESPValue {
        let reply: RESPValue
        // Replicas that acknowledge a write only after its call gave up (503): its events go
        // out live then, rather than only with the channel's next event.
        var late: (@Sendable (RESPValue) async -> Void)?
        if !self.scripts.publishes {
            let store = self
            late = { reply in
                guard let payloads = Self.deferredPayloads(reply) else { return }
                await store.publishLive(payloads, channel: channel)
            }
        }
        do {
            reply = try await self.timed(name) {
                try await self.redis.run(script, evalsha, lateReplication: late)
            }
        } catch let error as RedisError {
            throw ChatError(script: error, channel: channel) ?? error
        }
        guard !self.scripts.publishes else { return reply }
        guard let parts = reply.array, parts.count == 2, let payloads = Self.deferredPayloads(reply) else {
            throw RedisError(.protocolViolation, "\(name) answered \(reply)")
        }
        await self.publishLive(payloads, channel: channel)
        return parts[0]
    }

    /// The payloads a script kept to publish (`{reply, payloads}`, ``RelayScripts/publishes`` false).
    private static func deferredPayloads(_ reply: RESPValue) -> [[UInt8]]? {
        guard let parts = reply.array, parts.count == 2 else { return nil }
        return parts[1].array?.compactMap(\.bytes)
    }

    /// Publishes `"<seq> <json>"` payloads on `channel`'s live topic, once replicas hold them
    /// (the scripts do not publish), and moves the channel's `replicated_seq` up to them
    /// (`lua/commit.lua`). Best effort: sockets that miss one find it in the log when the
    /// channel's next event arrives, or when they resume.
    private func publishLive(_ payloads: [[UInt8]], channel: String) async {
        guard !payloads.isEmpty else { return }
        let keys = RelayKeys.Channel(channel)
        var arguments: [any RedisArgument] = [keys.topic]
        arguments.append(contentsOf: payloads)
        _ = try? await self.timed("publish") {
            try await self.redis.runUnwaited(self.scripts.commit, keys: [keys.meta], arguments: arguments) { _ in () }
        }
    }

    /// The last seq a reader of the log is shown: the channel's, or with `--redis-wait` no
    /// later than its `replicated_seq` (absent: a channel with no event since the relay waits
    /// for replicas). Events above it are being written, or were answered 503; a failover may
    /// still lose them.
    static func readable(lastSeq: Int64, replicated: String?) -> Int64 {
        guard let replicated = replicated.flatMap({ Int64($0) }) else { return lastSeq }
        return min(lastSeq, replicated)
    }

    /// The first seq from `XRANGE log - + COUNT 1`, or `lastSeq + 1` for an empty log.
    static func firstSeq(_ reply: RESPValue, lastSeq: Int64) -> Int64 {
        guard case .bulkString(let id)? = reply.array?.first?.array?.first, let seq = Self.seq(ofEntryID: id.readableBytesView)
        else { return lastSeq + 1 }
        return seq
    }

    /// The seq of a log entry's id, `<seq>-0`, read from its bytes: the one reader of entry ids.
    static func seq(ofEntryID id: some Sequence<UInt8>) -> Int64? {
        var seq: Int64 = 0
        var digits = 0
        for byte in id {
            if byte == UInt8(ascii: "-") { break }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9"), digits < 18 else { return nil }
            seq = seq * 10 + Int64(byte - UInt8(ascii: "0"))
            digits += 1
        }
        return digits > 0 ? seq : nil
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

/// Index entries a relay checks and writes again after a membership call, should their users'
/// shard not have taken them, or lost them in a failover: at most ``limit`` users' worth at a time.
final class IndexRepairs: Sendable {
    static let limit = 10_000
    static let attempts = 60
    static let interval: Duration = .seconds(1)
    /// When, after it was written, an entry is checked again: past a primary's failover.
    static let checks: [Duration] = [.seconds(5), .seconds(30)]
    let pending = Atomic<Int>(0)
}
