import Foundation
import Relay
import TestSupport
import Testing

/// Sends messages as `user` until the channel's log holds `total` events, `concurrency` at a time.
private func fill(_ relay: RelayTestClient, _ user: String, _ channel: String, upTo total: Int, concurrency: Int = 8) async throws {
    let start = try await relay.lastSeq(user, channel)
    let count = total - start
    try await withThrowingTaskGroup(of: Void.self) { group in
        for worker in 0..<concurrency {
            group.addTask {
                for index in stride(from: worker, to: count, by: concurrency) {
                    try await relay.send(user, channel, "message \(index)", clientMessageID: "fill-\(index)")
                }
            }
        }
        try await group.waitForAll()
    }
    #expect(try await relay.lastSeq(user, channel) == total)
}

/// One page of history, as seqs.
private struct Page: Equatable, CustomStringConvertible {
    var seqs: [Int]
    var hasMore: Bool

    init(_ seqs: [Int], _ hasMore: Bool) {
        self.seqs = seqs
        self.hasMore = hasMore
    }

    var description: String {
        let range = seqs.count > 4 ? "\(seqs.first!)...\(seqs.last!) (\(seqs.count))" : "\(seqs)"
        return "\(range) has_more: \(hasMore)"
    }
}

@Suite("History", .timeLimit(.minutes(5)))
struct HistoryTests {
    @Test func pagesInBothDirectionsWithExactHasMore() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            try await fill(relay, alice, id, upTo: 500)

            func page(_ query: String) async throws -> Page {
                let (events, hasMore) = try await relay.history(alice, id, query)
                return Page(seqs(events), hasMore)
            }
            // Latest N, ascending; N defaults to 50.
            #expect(try await page("") == Page(Array(451...500), true))
            #expect(try await page("limit=200") == Page(Array(301...500), true))
            #expect(try await page("limit=1") == Page([500], true))
            #expect(try await page("limit=200&before=301") == Page(Array(101...300), true))
            #expect(try await page("limit=200&before=101") == Page(Array(1...100), false))
            #expect(try await page("limit=100&before=101") == Page(Array(1...100), false), "exactly the rest: no more")
            #expect(try await page("limit=99&before=101") == Page(Array(2...100), true))
            #expect(try await page("before=2") == Page([1], false))
            #expect(try await page("before=1") == Page([], false))
            #expect(try await page("before=51") == Page(Array(1...50), false))
            #expect(try await page("before=52") == Page(Array(2...51), true))
            #expect(try await page("after=0&limit=200") == Page(Array(1...200), true))
            #expect(try await page("after=200&limit=200") == Page(Array(201...400), true))
            #expect(try await page("after=400&limit=200") == Page(Array(401...500), false))
            #expect(try await page("after=300&limit=200") == Page(Array(301...500), false), "exactly the rest: no more")
            #expect(try await page("after=299&limit=200") == Page(Array(300...499), true))
            #expect(try await page("after=0") == Page(Array(1...50), true))
            #expect(try await page("after=499") == Page([500], false))
            #expect(try await page("after=500") == Page([], false))
            #expect(try await page("after=10000") == Page([], false))
            #expect(try await page("before=10000&limit=3") == Page([498, 499, 500], true))
        }
    }

    @Test func pagingThrough500EventsYieldsEachSeqOnceEitherWay() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            try await fill(relay, alice, id, upTo: 500)

            for limit in [7, 50, 200] {
                var forward: [Int] = []
                var after = 0
                var pages = 0
                while true {
                    let (events, hasMore) = try await relay.history(alice, id, "after=\(after)&limit=\(limit)")
                    #expect(events.count <= limit)
                    forward += seqs(events)
                    pages += 1
                    guard hasMore, let last = events.last["seq"].int, pages <= 600 else { break }
                    after = last
                }
                #expect(forward == Array(1...500), "forwards, limit \(limit)")

                var backward: [Int] = []
                var (events, hasMore) = try await relay.history(alice, id, "limit=\(limit)")
                backward = seqs(events) + backward
                pages = 0
                while hasMore, let first = events.first["seq"].int, pages <= 600 {
                    (events, hasMore) = try await relay.history(alice, id, "before=\(first)&limit=\(limit)")
                    #expect(events.count <= limit)
                    backward = seqs(events) + backward
                    pages += 1
                }
                #expect(backward == Array(1...500), "backwards, limit \(limit)")
            }
        }
    }

    @Test func eventsAreCompleteAndAscendingInEveryPage() async throws {
        try await withRelay { relay in
            let (alice, bob) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("bob"))
            let id = try await relay.createGroup(alice, members: [bob])
            var sent: [JSON] = []
            for index in 0..<5 {
                sent.append(try await relay.send(index.isMultiple(of: 2) ? alice : bob, id, "m\(index)"))
            }
            let (events, hasMore) = try await relay.history(bob, id, "after=2")
            #expect(!hasMore)
            #expect(events == sent, "history returns the events exactly as the sends did")
        }
    }

    @Test func limitDefaultsAndMaximumFollowTheConfiguration() async throws {
        let smallPages: (inout RelayConfiguration) -> Void = {
            $0.limits.defaultHistoryLimit = 3
            $0.limits.maxHistoryLimit = 5
        }
        try await withRelay(smallPages) { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            try await fill(relay, alice, id, upTo: 10, concurrency: 1)
            #expect(seqs(try await relay.history(alice, id).events) == [8, 9, 10])
            #expect(seqs(try await relay.history(alice, id, "limit=5").events) == [6, 7, 8, 9, 10])
            expectError(try await relay.request("GET", "/channels/\(id)/messages?limit=6", token: relay.token(alice)), 400, "bad_request")
        }
    }

    @Test func limitOf200IsTheDefaultMaximum() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            try await fill(relay, alice, id, upTo: 210)
            let (events, hasMore) = try await relay.history(alice, id, "limit=200")
            #expect(seqs(events) == Array(11...210))
            #expect(hasMore)
            expectError(try await relay.request("GET", "/channels/\(id)/messages?limit=201", token: relay.token(alice)), 400, "bad_request")
        }
    }

    @Test(arguments: [
        "limit=0", "limit=-1", "limit=201", "limit=abc", "limit=1.5", "limit=", "limit=99999999999999999999999", "limit=%201",
        "limit=%2B5", "limit=05", "before=-0",
        "before=abc", "before=1.5", "before=", "before=99999999999999999999999", "after=abc", "after=", "after=-1", "before=-1",
    ])
    func badQueryNumbersAreBadRequest(_ query: String) async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            expectError(try await relay.request("GET", "/channels/\(id)/messages?\(query)", token: relay.token(alice)), 400, "bad_request")
        }
    }

    @Test func historyIsForMembersOnly() async throws {
        try await withRelay { relay in
            let (alice, mallory) = (TestRedis.uniqueName("alice"), TestRedis.uniqueName("mallory"))
            let id = try await relay.createGroup(alice)
            try await relay.send(alice, id, "secret")
            let forbidden = try await relay.request("GET", "/channels/\(id)/messages", token: relay.token(mallory))
            expectError(forbidden, 403, "forbidden")
            #expect(!forbidden.text.contains("secret"))
            expectError(
                try await relay.request("GET", "/channels/\(TestRedis.uniqueName("none"))/messages", token: relay.token(alice)),
                404,
                "not_found"
            )
        }
    }
}
