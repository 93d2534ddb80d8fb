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

    /// The hot path of backends and bots: the body is read by ``StrictJSON`` alone, and the
    /// event comes back as the script wrote it.
    @Sendable func send(_ request: Request, context: RelayRequestContext) async throws -> Response {
        let caller = try context.caller()
        let id = try self.parsing.id("channel", in: context)
        let body = try await self.parsing.object(from: request)
        let clientMessageID = try self.clientMessageID(try self.parsing.string("client_msg_id", in: body))
        let text = try self.parsing.text(try self.parsing.string("text", in: body))
        let (created, event) = try await self.store.send(channel: id, sender: caller.userID, clientMessageID: clientMessageID, text: text)
        return .json("{\"message\":\(event)}", status: created ? .created : .ok)
    }

    /// A `client_msg_id`: 1 to 128 bytes of UTF-8 (``RequestParsing/clientMessageID(_:)``).
    func clientMessageID(_ value: String) throws -> String {
        try self.parsing.clientMessageID(value)
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
        let page = try await self.store.history(channel: id, caller: caller.userID, range: range, limit: Int(limit))
        // Events pass through as the log holds them.
        return .json(
            "{\"messages\":[" + page.events.joined(separator: ",") + "],\"has_more\":\(page.hasMore),\"first_seq\":\(page.firstSeq)}"
        )
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
        guard let value = RequestParsing.pathParameter("message", in: context), Identifier.isValid(value) else {
            throw APIError(.notFound, "no such message")
        }
        return value
    }

    struct ReadAnswer: Encodable {
        var lastReadSeq: Int64
        enum CodingKeys: String, CodingKey { case lastReadSeq = "last_read_seq" }
    }

    @Sendable func read(_ request: Request, context: RelayRequestContext) async throws -> Response {
        let caller = try context.caller()
        let id = try self.parsing.id("channel", in: context)
        // Read as a WebSocket `read` is: a seq is a whole number as JSON writes it (`5`, not `5.0` or `5e0`).
        let body = try await self.parsing.object(from: request)
        guard let field = body["seq"] else { throw APIError.badRequest("missing field seq") }
        guard let seq = field.int64, seq >= 0 else { throw APIError.badRequest("seq must be a whole number, 0 or more") }
        let lastRead = try await self.store.markRead(channel: id, user: caller.userID, session: caller.sessionID, seq: seq)
        return try .json(encoding: ReadAnswer(lastReadSeq: lastRead))
    }
}
