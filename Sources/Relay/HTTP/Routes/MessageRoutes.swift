import Hummingbird

/// `/channels/{id}/messages` and `/channels/{id}/read`.
struct MessageRoutes: Sendable {
    let store: ChatStore
    let parsing: RequestParsing

    func register(on router: some RouterMethods<RelayRequestContext>) {
        router.post("/channels/{channel}/messages", use: self.send)
        router.get("/channels/{channel}/messages", use: self.history)
        router.patch("/channels/{channel}/messages/{message}", use: self.edit)
        router.delete("/channels/{channel}/messages/{message}", use: self.delete)
        router.post("/channels/{channel}/read", use: self.read)
    }

    struct SendRequest: Decodable {
        var client_msg_id: String
        var text: String
    }

    @Sendable func send(_ request: Request, context: RelayRequestContext) async throws -> Response {
        let caller = try context.caller()
        let id = try self.parsing.id("channel", in: context)
        let body = try await self.parsing.decode(SendRequest.self, from: request)
        let clientMessageID = try self.clientMessageID(body.client_msg_id)
        let text = try self.parsing.text(body.text)
        let (created, event) = try await self.store.send(channel: id, sender: caller.userID, clientMessageID: clientMessageID, text: text)
        return .json("{\"message\":\(event)}", status: created ? .created : .ok)
    }

    func clientMessageID(_ value: String) throws -> String {
        guard !value.isEmpty, value.count <= self.parsing.limits.maxClientMessageIDLength else {
            throw APIError.badRequest("client_msg_id must be 1 to \(self.parsing.limits.maxClientMessageIDLength) characters")
        }
        return value
    }

    @Sendable func history(_ request: Request, context: RelayRequestContext) async throws -> Response {
        let caller = try context.caller()
        let id = try self.parsing.id("channel", in: context)
        let limits = self.parsing.limits
        let limit =
            try self.parsing.integer("limit", in: request, range: 1...Int64(limits.maxHistoryLimit)) ?? Int64(limits.defaultHistoryLimit)
        let before = try self.parsing.integer("before", in: request, range: 0...Int64.max - 1)
        let after = try self.parsing.integer("after", in: request, range: 0...Int64.max - 1)
        let range: ChatStore.HistoryRange =
            switch (before, after) {
            case (nil, nil): .latest
            case (let before?, nil): .before(before)
            case (nil, let after?): .after(after)
            case (let before?, let after?): .between(after: after, before: before)
            }
        let (events, hasMore) = try await self.store.history(channel: id, caller: caller.userID, range: range, limit: Int(limit))
        return .json("{\"messages\":[" + events.joined(separator: ",") + "],\"has_more\":\(hasMore)}")
    }

    struct EditRequest: Decodable {
        var text: String
    }

    @Sendable func edit(_ request: Request, context: RelayRequestContext) async throws -> Response {
        let caller = try context.caller()
        let id = try self.parsing.id("channel", in: context)
        let messageID = try self.messageID(in: context)
        let body = try await self.parsing.decode(EditRequest.self, from: request)
        let text = try self.parsing.text(body.text)
        let event = try await self.store.edit(channel: id, sender: caller.userID, messageID: messageID, text: text)
        return .json("{\"message\":\(event)}")
    }

    @Sendable func delete(_ request: Request, context: RelayRequestContext) async throws -> Response {
        let caller = try context.caller()
        let id = try self.parsing.id("channel", in: context)
        let messageID = try self.messageID(in: context)
        let event = try await self.store.delete(channel: id, sender: caller.userID, messageID: messageID)
        return .json("{\"message\":\(event)}")
    }

    /// Message ids are made by the relay from the id charset; anything else cannot exist.
    private func messageID(in context: RelayRequestContext) throws -> String {
        guard let value = context.parameters.get("message"), Identifier.isValid(value) else {
            throw APIError(.notFound, "no such message")
        }
        return value
    }

    struct ReadRequest: Decodable {
        var seq: Int64
    }

    @Sendable func read(_ request: Request, context: RelayRequestContext) async throws -> Response {
        let caller = try context.caller()
        let id = try self.parsing.id("channel", in: context)
        let body = try await self.parsing.decode(ReadRequest.self, from: request)
        guard body.seq >= 0 else { throw APIError.badRequest("seq must not be negative") }
        let lastRead = try await self.store.markRead(channel: id, user: caller.userID, session: caller.sessionID, seq: body.seq)
        return .json("{\"last_read_seq\":\(lastRead)}")
    }
}
