import Foundation
import TestSupport
import Testing

@testable import Relay

/// `--rate-limit`: writes per user per second, a burst of one second's worth.
@Suite("Rate limit", .timeLimit(.minutes(2)))
struct RateLimiterTests {
    static let second: UInt64 = 1_000_000_000

    @Test func aBucketHoldsOneSecondsWorthAndFillsUpAgain() {
        let limiter = RateLimiter(perSecond: 4)
        let start: UInt64 = 10 * Self.second
        for _ in 0..<4 { #expect(limiter.take("u", now: start) == nil) }
        #expect(limiter.take("u", now: start) == 1, "the fifth in the same instant waits")
        #expect(limiter.take("v", now: start) == nil, "each user has a bucket of its own")
        // A quarter of a second brings one write back, and no more.
        #expect(limiter.take("u", now: start + Self.second / 4) == nil)
        #expect(limiter.take("u", now: start + Self.second / 4) != nil)
        // An idle user's bucket fills up to a second's worth, never beyond.
        let later = start + 10 * Self.second
        for _ in 0..<4 { #expect(limiter.take("u", now: later) == nil) }
        #expect(limiter.take("u", now: later) != nil)
    }

    @Test func aSlowRateSaysHowLongToWait() {
        let limiter = RateLimiter(perSecond: 1)
        #expect(limiter.take("u", now: Self.second) == nil)
        #expect(limiter.take("u", now: Self.second) == 1)
        // Refused writes take nothing: the next one goes once a second has passed.
        #expect(limiter.take("u", now: 2 * Self.second) == nil)
    }

    @Test func bucketsOfUsersWhoStoppedWritingAreDropped() {
        let limiter = RateLimiter(perSecond: 2)
        let start: UInt64 = 5 * Self.second
        for index in 0...RateLimiter.sweepAbove { #expect(limiter.take("user-\(index)", now: start) == nil) }
        #expect(limiter.count == RateLimiter.sweepAbove + 1)
        // Two seconds on, every bucket but the writer's own is full again: they go.
        #expect(limiter.take("writer", now: start + 2 * Self.second) == nil)
        #expect(limiter.count == 1)
    }

    /// Over the limit, REST writes get 429 `rate_limited` with `Retry-After`, and WebSocket
    /// `send` and `read` frames an error naming the frame; reads are not limited, other users are
    /// not held back, and writes go through again a second later. Writes go in bursts of ten at
    /// once, so that a slow machine cannot spread them over more than the bucket refills.
    @Test func writesOverTheLimitAreRefusedOnRESTAndWebSocket() async throws {
        let oneASecond: RelayConfigurator = { $0.limits.writesPerSecond = 1 }
        try await withRelay(oneASecond) { relay in
            let (alice, bob, carol) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"), TestRedis.uniqueName("carol"))
            let id = try await relay.createGroup(alice, members: [bob, carol])
            let token = relay.token(bob)
            let responses = try await withThrowingTaskGroup(of: TestResponse.self) { group in
                for index in 0..<10 {
                    group.addTask {
                        try await relay.request(
                            "POST",
                            "/channels/\(id)/messages",
                            token: token,
                            json: ["client_msg_id": "rest-\(index)", "text": "\(index)"],
                            headers: ["Origin": "https://chat.example"]
                        )
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(responses.allSatisfy { $0.status == 201 || $0.status == 429 }, "\(responses)")
            let refused = try #require(responses.first { $0.status == 429 }, "\(responses.map(\.status))")
            expectError(refused, 429, "rate_limited")
            #expect(refused.headers["retry-after"].flatMap { Int($0) } == 1, "\(refused)")
            // A web page calling the API may read it.
            #expect(refused.headers["access-control-expose-headers"]?.contains("Retry-After") == true, "\(refused)")
            #expect(try await relay.request("GET", "/channels/\(id)/messages", token: token).status == 200)
            #expect(try await relay.send(carol, id, "carol's own")["seq"].int != nil, "other users are not held back")

            try await withSockets { sockets in
                let socket = try await TestSocket.connect(relay, token: token)
                sockets.append(socket)
                func answers(_ frames: [[String: Any]], match: @escaping (JSON) -> Bool) async throws -> [JSON] {
                    let start = socket.frames.count
                    for frame in frames { try await socket.send(json: frame) }
                    try await socket.waitUntil("an answer to each of \(frames.count) frames") { all in
                        all.dropFirst(start).filter(match).count >= frames.count
                    }
                    return socket.frames.dropFirst(start).filter(match)
                }
                let sends = (0..<10).map { ["type": "send", "channel_id": id, "client_msg_id": "ws-\($0)", "text": "ws"] as [String: Any] }
                let sent = try await answers(sends) { $0["type"].string == "ack" || $0["type"].string == "error" }
                let limited = try #require(sent.first { $0["code"].string == "rate_limited" }, "\(sent)")
                #expect(limited["channel_id"].string == id && limited["client_msg_id"].string?.hasPrefix("ws-") == true, "\(limited)")
                #expect(sent.allSatisfy { $0["type"].string == "ack" || $0["code"].string == "rate_limited" }, "\(sent)")
                let reads = (0..<10).map { _ in ["type": "read", "channel_id": id, "seq": 1] as [String: Any] }
                let read = try await answers(reads) { $0["type"].string == "read_ok" || $0["type"].string == "error" }
                #expect(read.contains { $0["code"].string == "rate_limited" && $0["channel_id"].string == id }, "\(read)")

                try await Task.sleep(for: .milliseconds(1100))
                let again = try await answers([["type": "send", "channel_id": id, "client_msg_id": "ws-again", "text": "ws"]]) {
                    $0["type"].string == "ack" || $0["type"].string == "error"
                }
                #expect(again.first?["type"].string == "ack", "\(again)")
            }
        }
    }
}
