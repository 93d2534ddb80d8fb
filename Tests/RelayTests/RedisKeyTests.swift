import Foundation
import TestSupport
import Testing

/// The hash tag Redis Cluster hashes `key` by: what lies between the first `{` and the first `}`
/// after it, if that is not empty.
private func hashTag(_ key: String) -> String? {
    guard let open = key.firstIndex(of: "{") else { return nil }
    let rest = key[key.index(after: open)...]
    guard let close = rest.firstIndex(of: "}"), close > rest.startIndex else { return nil }
    return String(rest[..<close])
}

/// The keys of the suite's Redis whose names contain `fragment`, by `redis-cli --scan`.
private func keys(containing fragment: String) async throws -> [String] {
    let serverBinary = ProcessInfo.processInfo.environment["REDIS_SERVER_BIN"] ?? "/usr/bin/redis-server"
    let cli = URL(fileURLWithPath: serverBinary).deletingLastPathComponent().appendingPathComponent("redis-cli").path
    let result = try await ChildProcess.run(
        cli,
        ["-h", TestRedis.host, "-p", "\(TestRedis.port)", "--scan", "--pattern", "*\(fragment)*"],
        environment: ProcessInfo.processInfo.environment
    )
    guard result.termination == .exited(0) else { throw TestFailure("redis-cli: \(result)") }
    return result.standardOutput.split(separator: "\n").map(String.init)
}

@Suite("Redis keys", .timeLimit(.minutes(3)))
struct RedisKeyTests {
    /// Contract §6: all keys of one channel share the hash tag `{channel_id}`, all keys of one
    /// user share `{user_id}` (so that the relay runs on Redis Cluster).
    @Test func everyKeyOfAChannelOrAUserCarriesItsHashTag() async throws {
        try await withRelay { relay in
            let suffix = UUID().uuidString.prefix(12).lowercased()
            let (alice, bob, carol) = ("alice.\(suffix)", "bob.\(suffix)", "carol.\(suffix)")
            let team = "team.\(suffix)"
            try await relay.createGroup(alice, members: [bob], id: team, name: "Team")
            let message = try await relay.send(alice, team, "hello", clientMessageID: "k1")
            let messageID = try #require(message["message_id"].string)
            #expect(
                try await relay.request("PATCH", "/channels/\(team)/messages/\(messageID)", token: relay.token(alice), json: ["text": "hi"])
                    .status == 200
            )
            #expect(try await relay.request("DELETE", "/channels/\(team)/messages/\(messageID)", token: relay.token(alice)).status == 200)
            #expect(
                try await relay.request("POST", "/channels/\(team)/read", token: relay.token(bob, session: "phone"), json: ["seq": 3])
                    .status == 200
            )
            #expect(
                try await relay.request("POST", "/channels/\(team)/members", token: relay.token(bob), json: ["user_id": carol]).status
                    == 200
            )
            #expect(try await relay.request("DELETE", "/channels/\(team)/members/\(carol)", token: relay.token(carol)).status == 200)
            let dmResponse = try await relay.request(
                "POST",
                "/channels",
                token: relay.token(alice),
                json: ["type": "dm", "members": [alice, carol]]
            )
            let dm = try #require(dmResponse.value["id"].string, "\(dmResponse)")
            try await relay.send(carol, dm, "psst")
            #expect(try await relay.request("POST", "/channels/\(dm)/read", token: relay.token(carol), json: ["seq": 1]).status == 200)
            #expect(try await relay.request("GET", "/presence?user_ids=\(alice),\(bob)", token: relay.token(carol)).status == 200)

            let channels = [team, dm]
            let users = [alice, bob, carol]
            let found = Set(try await keys(containing: String(suffix)) + keys(containing: dm))
            #expect(found.contains { $0.contains(team) }, "the channel has keys: \(found.sorted())")
            for key in found.sorted() {
                let tag = hashTag(key)
                let namesChannel = channels.contains { key.contains($0) }
                // A DM's id may be made of its members' ids: those don't make a key a user's.
                let withoutChannels = channels.reduce(key) { $0.replacingOccurrences(of: $1, with: "") }
                let namesUser = users.contains { withoutChannels.contains($0) }
                if namesChannel && !namesUser {
                    #expect(tag.map(channels.contains) == true, "a channel's key is tagged with the channel id: \(key)")
                } else if namesUser && !namesChannel {
                    #expect(tag.map(users.contains) == true, "a user's key is tagged with the user id: \(key)")
                } else {
                    #expect(tag.map { channels.contains($0) || users.contains($0) } == true, "\(key)")
                }
            }
        }
    }
}
