import RedisClient
import Testing

@testable import Relay

/// How generated channel ids spread over the shards of a cluster.
@Suite struct SlotSpreadTests {
    /// 100,000 generated group ids over the slot ranges `redis-cli --cluster create` gives three
    /// primaries: each gets a third, within ±2 % of it.
    @Test func generatedChannelIDsSpreadEvenlyOverThreePrimaries() {
        let ranges = [0...5460, 5461...10922, 10923...16383]
        var counts = [0, 0, 0]
        let total = 100_000
        for _ in 0..<total {
            let slot = Int(HashSlot(key: Identifier.make(prefix: "g")).rawValue)
            counts[ranges.firstIndex { $0.contains(slot) }!] += 1
        }
        for count in counts {
            let share = Double(count) / Double(total)
            #expect(abs(share - 1.0 / 3.0) <= 0.02 / 3.0, "\(counts)")
        }
    }
}
