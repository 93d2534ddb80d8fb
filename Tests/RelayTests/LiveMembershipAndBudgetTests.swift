import Foundation
import TestSupport
import Testing

@testable import Relay

/// Membership exact at a seq on a live socket, and the outbound budget, against a real relay
/// and Redis over real sockets.
@Suite("Live membership and budget")
struct LiveMembershipAndBudgetTests {
    /// The channel events in `bytes` (a raw socket's), as JSON, in order.
    static func events(in bytes: [UInt8], channel: String) -> [JSON] {
        StalledSocket.frames(in: bytes).filter { $0.opcode == 0x1 }.compactMap { JSON(parsing: $0.payload) }
            .filter { $0["channel_id"].string == channel && $0["seq"].int != nil }
    }

    /// A member removed while its socket is busy replaying thousands of events reads the
    /// channel up to and including its own `member_left`, and nothing after it: neither the
    /// rest of the replay nor what is posted live afterwards.
    @Test func aMemberRemovedDuringALongReplayGetsNothingAfterItsMemberLeft() async throws {
        try await withRelay { relay in
            let (owner, bob) = (TestRedis.uniqueName("owner"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(owner, members: [bob])
            let other = try await relay.createGroup(owner, members: [bob])
            try await withThrowingTaskGroup(of: Void.self) { group in
                for lane in 0..<10 {
                    group.addTask { for index in 0..<200 { try await relay.send(owner, id, "before \(lane)/\(index)") } }
                }
                try await group.waitForAll()
            }
            // A small receive buffer and no reading: the replay stalls on the socket's buffer.
            let socket = try await StalledSocket.open(port: relay.port, token: relay.token(bob), receiveBuffer: 4096)
            _ = try await socket.read(timeout: .seconds(5)) { String(decoding: $0, as: UTF8.self).contains("\"hello\"") }
            try socket.sendText("{\"type\":\"resume\",\"cursors\":{\"\(id)\":0}}")
            try await Task.sleep(for: .milliseconds(300))

            let removed = try await relay.request("DELETE", "/channels/\(id)/members/\(bob)", token: relay.token(owner))
            #expect(removed.status == 200, "\(removed)")
            let leftSeq = try #require(removed.value["event"]["seq"].int, "\(removed)")
            for index in 0..<20 { try await relay.send(owner, id, "after \(index)") }
            let marker = try await relay.send(owner, other, "marker")

            // Now read everything: the replay, `resumed`, then the marker on the other channel.
            let markerSeq = try #require(marker["seq"].int)
            let (bytes, _) = try await socket.read(timeout: .seconds(60)) { bytes in
                let text = String(decoding: bytes, as: UTF8.self)
                return text.contains("\"type\":\"resumed\"") && text.contains("\"text\":\"marker\"")
            }
            #expect(Self.events(in: bytes, channel: other).contains { $0["seq"].int == markerSeq }, "the marker arrived")
            let seqs = Self.events(in: bytes, channel: id).compactMap { $0["seq"].int }
            expectSeqs(seqs, Array(1...leftSeq), "the removed member's socket")
            let last = Self.events(in: bytes, channel: id).last
            #expect(last?["type"].string == "member_left" && last?["user_id"].string == bob)
        }
    }

    /// A user added in a batch of far more than a page of events still starts at its own
    /// `member_joined` on a socket that was open before, and gets what follows it.
    @Test func aUserAddedInALargeBatchStartsAtItsOwnMemberJoined() async throws {
        try await withRelay { relay in
            let owner = TestRedis.uniqueName("owner")
            let bob = TestRedis.uniqueName("bob")
            let id = try await relay.createGroup(owner)
            let socket = try await TestSocket.connect(relay, token: relay.token(bob), label: "bob")
            defer { socket.abort() }
            let others = (0..<250).map { TestRedis.uniqueName("u\($0)") }
            let added = try await relay.request(
                "POST",
                "/channels/\(id)/members",
                token: relay.token(owner),
                json: ["user_ids": others + [bob]]
            )
            #expect(added.status == 200, "\(added)")
            let message = try await relay.send(owner, id, "welcome")
            let top = try #require(message["seq"].int)
            _ = try await socket.waitFor("the message after the batch") { $0["channel_id"].string == id && $0["seq"].int == top }
            let events = socket.events(id)
            #expect(events.first?["type"].string == "member_joined" && events.first?["user_id"].string == bob, "\(events.prefix(2))")
            expectSeqs(socket.seqs(id), Array((top - 1)...top), "from bob's own member_joined on")
        }
    }

    /// A resume from below where retention trimmed the log replays from the log's first event,
    /// and `resumed` says so for that channel (`truncated`), and for no other.
    @Test func aResumeBelowTheTrimmedLogSaysWhereItBegins() async throws {
        let configure: RelayConfigurator = { $0.retention.maxEvents = 5 }
        try await withRelay(configure) { relay in
            let alice = TestRedis.uniqueName("alice")
            let trimmed = try await relay.createGroup(alice)
            let whole = try await relay.createGroup(alice)
            for index in 0..<11 { try await relay.send(alice, trimmed, "m\(index)") }
            try await relay.send(alice, whole, "one")
            let first = try #require(try await relay.channel(alice, trimmed)["first_seq"].int)
            let last = try await relay.lastSeq(alice, trimmed)
            #expect(first > 1)

            let socket = try await TestSocket.connect(relay, token: relay.token(alice), label: "alice")
            defer { socket.abort() }
            let start = socket.frames.count
            try await socket.send(json: ["type": "resume", "cursors": [trimmed: 0, whole: 1]])
            let resumed = try await socket.waitFor("resumed", from: start) { $0["type"].string == "resumed" }
            #expect(resumed["truncated"][trimmed].int == first, "\(resumed)")
            #expect(resumed["truncated"][whole] == nil, "only the trimmed channel: \(resumed)")
            expectSeqs(socket.seqs(trimmed), Array(first...last), "from the log's first event")
        }
    }
}
