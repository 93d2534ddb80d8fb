import Foundation
import TestSupport
import Testing

/// Shorthands for the set-up steps of tests: each one requires the success status the contract
/// gives, so that a test fails at the step that went wrong.
extension RelayTestClient {
    /// Creates a group as `user` with `members` (the caller is added by the relay) and returns its id.
    @discardableResult
    func createGroup(
        _ user: String,
        members: [String] = [],
        id: String? = nil,
        name: String? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> String {
        var body: [String: Any] = ["type": "group", "members": members]
        if let id { body["id"] = id }
        if let name { body["name"] = name }
        let response = try await request("POST", "/channels", token: token(user), json: body)
        try #require(response.status == 201, "\(response)", sourceLocation: sourceLocation)
        return try #require(response.value["id"].string, "\(response)", sourceLocation: sourceLocation)
    }

    /// Sends `text` as `user` and returns the event (expects 201).
    @discardableResult
    func send(
        _ user: String,
        _ channel: String,
        _ text: String,
        clientMessageID: String = UUID().uuidString,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> JSON {
        let response = try await request(
            "POST",
            "/channels/\(channel)/messages",
            token: token(user),
            json: ["client_msg_id": clientMessageID, "text": text]
        )
        try #require(response.status == 201, "\(response)", sourceLocation: sourceLocation)
        return try #require(response.value["message"], "\(response)", sourceLocation: sourceLocation)
    }

    /// A send answered `503 unavailable` (Redis down, or its replicas short: the write may have
    /// happened all the same).
    func sendUnavailable(
        _ user: String,
        _ channel: String,
        _ text: String,
        clientMessageID: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let response = try await request(
            "POST",
            "/channels/\(channel)/messages",
            token: token(user),
            json: ["client_msg_id": clientMessageID, "text": text]
        )
        expectError(response, 503, "unavailable", sourceLocation: sourceLocation)
    }

    /// `GET /channels/{id}/messages?query` as `user` (expects 200).
    func history(
        _ user: String,
        _ channel: String,
        _ query: String = "",
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> (events: [JSON], hasMore: Bool) {
        let path = "/channels/\(channel)/messages" + (query.isEmpty ? "" : "?\(query)")
        let response = try await request("GET", path, token: token(user))
        try #require(response.status == 200, "\(response)", sourceLocation: sourceLocation)
        let events = try #require(response.value["messages"].array, "\(response)", sourceLocation: sourceLocation)
        let hasMore = try #require(response.value["has_more"].bool as Bool?, "\(response)", sourceLocation: sourceLocation)
        return (events, hasMore)
    }

    /// Every event of `channel`, paging forwards from the start.
    func allEvents(_ user: String, _ channel: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> [JSON] {
        var events: [JSON] = []
        var after = 0
        while true {
            let page = try await history(user, channel, "after=\(after)&limit=200", sourceLocation: sourceLocation)
            events += page.events
            guard page.hasMore else { return events }
            after = try #require(page.events.last["seq"].int, "has_more with an empty page", sourceLocation: sourceLocation)
        }
    }

    /// `GET /channels/{id}` as `user` (expects 200).
    func channel(_ user: String, _ id: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> JSON {
        let response = try await request("GET", "/channels/\(id)", token: token(user))
        try #require(response.status == 200, "\(response)", sourceLocation: sourceLocation)
        return try #require(response.value, "\(response)", sourceLocation: sourceLocation)
    }

    /// The channel's `last_seq`, as `user` sees it.
    func lastSeq(_ user: String, _ id: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> Int {
        try #require(try await channel(user, id, sourceLocation: sourceLocation)["last_seq"].int, sourceLocation: sourceLocation)
    }

    /// The entry for `id` in `GET /channels` as `user`, with `session`'s token.
    func listEntry(
        _ user: String,
        session: String = "default",
        _ id: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> JSON? {
        let response = try await request("GET", "/channels", token: token(user, session: session))
        try #require(response.status == 200, "\(response)", sourceLocation: sourceLocation)
        let channels = try #require(response.value["channels"].array, "\(response)", sourceLocation: sourceLocation)
        return channels.first { $0["id"].string == id }
    }
}

/// Fresh user ids, one per name: `users("alice", "bob")`.
func users(_ names: String...) -> [String] {
    names.map { TestRedis.uniqueName($0) }
}

/// Expects an error response: `status`, and the body `{"error": {"code": code, "message": "…"}}`.
func expectError(
    _ response: TestResponse,
    _ status: Int,
    _ code: String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(response.status == status, "\(response)", sourceLocation: sourceLocation)
    #expect(response.errorCode == code, "\(response)", sourceLocation: sourceLocation)
    #expect(response.errorMessage.map { !$0.isEmpty } == true, "no error.message: \(response)", sourceLocation: sourceLocation)
}

/// Expects the answer to a request over a limit: 413 `too_large` or 400 `bad_request` (the
/// contract allows either), with the error body.
func expectOverLimit(_ response: TestResponse, sourceLocation: SourceLocation = #_sourceLocation) {
    if response.status == 400 {
        expectError(response, 400, "bad_request", sourceLocation: sourceLocation)
    } else {
        expectError(response, 413, "too_large", sourceLocation: sourceLocation)
    }
}

/// Polls `condition` every 50 ms until it holds; throws after `timeout`.
func waitUntil(
    _ what: String,
    timeout: Duration = .seconds(30),
    _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while true {
        if try await condition() { return }
        guard ContinuousClock.now < deadline else { throw TestFailure("timed out after \(timeout) waiting until \(what)") }
        try await Task.sleep(for: .milliseconds(50))
    }
}

/// The seqs of `events`, in order.
func seqs(_ events: [JSON]) -> [Int] {
    events.map { $0["seq"].int ?? -1 }
}
