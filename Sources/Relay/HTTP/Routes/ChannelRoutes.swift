import Hummingbird
import RedisClient

/// `/channels`: create, list, show, members.
struct ChannelRoutes: Sendable {
    let store: ChatStore
    let parsing: RequestParsing
    let realtime: RealtimeNotifier

    func register(on router: some RouterMethods<RelayRequestContext>) {
        router.post("/channels", use: self.create)
        router.get("/channels", use: self.list)
        router.get("/channels/{channel}", use: self.show)
        router.get("/channels/{channel}/members", use: self.members)
        router.post("/channels/{channel}/members", use: self.addMembers)
        router.delete("/channels/{channel}/members/{user}", use: self.removeMember)
    }

    struct CreateRequest: Decodable {
        var type: String
        var members: [String]
        var name: String?
        var id: String?
    }

    @Sendable func create(_ request: Request, context: RelayRequestContext) async throws -> Response {
        let caller = try context.caller()
        let body = try await self.parsing.decode(CreateRequest.self, from: request)
        guard let type = ChannelType(rawValue: body.type) else {
            throw APIError.badRequest("type must be \"dm\" or \"group\"")
        }
        guard body.members.count <= self.parsing.limits.maxMembersPerRequest else {
            throw APIError(.tooLarge, "at most \(self.parsing.limits.maxMembersPerRequest) members per request")
        }
        let members = try body.members.map { try self.parsing.id($0, field: "members") }
        let id = try body.id.map { try self.parsing.id($0, field: "id") }
        let name = body.name ?? ""
        guard name.utf8.count <= 256 else { throw APIError.badRequest("name is over 256 bytes") }
        let (created, channel) = try await self.tellingUsersIfUnavailable([caller.userID] + members) {
            try await self.store.createChannel(type: type, id: id, name: name, creator: caller.userID, members: members)
        }
        if created {
            await self.realtime.channelsChanged(for: [caller.userID] + members)
        }
        return try .json(encoding: channel, status: created ? .created : .ok)
    }

    struct ChannelList: Encodable {
        var channels: [ChannelSummary]
    }

    @Sendable func list(_ request: Request, context: RelayRequestContext) async throws -> Response {
        let caller = try context.caller()
        return try .json(encoding: ChannelList(channels: try await self.store.listChannels(user: caller.userID, session: caller.sessionID)))
    }

    @Sendable func show(_ request: Request, context: RelayRequestContext) async throws -> Response {
        let caller = try context.caller()
        let id = try self.parsing.id("channel", in: context)
        return try .json(encoding: try await self.store.channel(id, caller: caller.userID))
    }

    /// `GET /channels/{id}/members?cursor=&limit=`: a page of members (`limit` 1 to 1,000,
    /// default 100).
    @Sendable func members(_ request: Request, context: RelayRequestContext) async throws -> Response {
        let caller = try context.caller()
        let id = try self.parsing.id("channel", in: context)
        let limit = try self.parsing.integer("limit", in: request, range: 1...Int64(ChatChannel.maxListedMembers)) ?? 100
        let cursor = try self.parsing.query("cursor", in: request)
        let page = try await self.store.members(channel: id, caller: caller.userID, cursor: cursor, limit: Int(limit))
        return try .json(encoding: page)
    }

    struct AddMembersRequest: Decodable {
        var user_id: String?
        var user_ids: [String]?
    }

    @Sendable func addMembers(_ request: Request, context: RelayRequestContext) async throws -> Response {
        let caller = try context.caller()
        let id = try self.parsing.id("channel", in: context)
        let body = try await self.parsing.decode(AddMembersRequest.self, from: request)
        guard body.user_id == nil || body.user_ids == nil else {
            // One or the other: together they would slip past the limit on user_ids.
            throw APIError.badRequest("give user_id or user_ids, not both")
        }
        var users = [String]()
        if let user = body.user_id { users.append(try self.parsing.id(user, field: "user_id")) }
        if let list = body.user_ids {
            guard list.count <= self.parsing.limits.maxMembersPerRequest else {
                throw APIError(.tooLarge, "at most \(self.parsing.limits.maxMembersPerRequest) user_ids per request")
            }
            users += try list.map { try self.parsing.id($0, field: "user_ids") }
        }
        guard !users.isEmpty else { throw APIError.badRequest("give user_id or user_ids") }
        let events = try await self.tellingUsersIfUnavailable(users) {
            try await self.store.addMembers(channel: id, actor: caller.userID, users: users)
        }
        if events.isEmpty {
            // Members already: maybe by an earlier call that failed after its script ran (a
            // relay that stopped, replicas short), whose users' sockets were never told.
            await self.realtime.channelsChanged(for: users)
        } else {
            await self.realtime.joined(channel: id, events: events)
        }
        return .json("{\"events\":[" + events.joined(separator: ",") + "]}")
    }

    /// Runs `call`, which makes `users` members; should it fail `unavailable` (`--redis-wait`,
    /// replicas short), its script may have run all the same, and a retry would find nothing
    /// new to tell: the users' sockets are told now to read their channels again.
    private func tellingUsersIfUnavailable<Result>(_ users: [String], _ call: () async throws -> Result) async throws -> Result {
        do {
            return try await call()
        } catch let error as RedisError where error.code == .unavailable {
            await self.realtime.channelsChanged(for: users)
            throw error
        }
    }

    @Sendable func removeMember(_ request: Request, context: RelayRequestContext) async throws -> Response {
        let caller = try context.caller()
        let id = try self.parsing.id("channel", in: context)
        let user = try self.parsing.id("user", in: context)
        let event = try await self.store.removeMember(channel: id, actor: caller.userID, user: user)
        return .json("{\"event\":\(event)}")
    }
}
