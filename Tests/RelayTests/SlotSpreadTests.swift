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

    /// `send.lua`'s `EVALSHA`, its keys written into it part by part: the same command, key for
    /// key and argument for argument, as one made of the key strings, and routed to the slot
    /// of its first key.
    @Test func aSendsScriptCallNamesTheChannelsKeysAndGoesToTheirSlot() throws {
        let redis = RedisClient(configuration: try RedisConfiguration(url: "redis://127.0.0.1:1"))
        let store = ChatStore(redis: redis, limits: RelayLimits(), metrics: RelayMetrics())
        for id in ["g1", "dm-1cb15457d1ddab60e205c0fe3ca2f65d", "team.x_Y-9"] {
            let command = store.sendCall(channel: id, sender: "alice", clientMessageID: "c-1", text: "hi \"there\"")
            let keys = RelayKeys.Channel(id)
            let parts = command.description.split(separator: " ", maxSplits: 10).map(String.init)
            #expect(parts[0] == "EVALSHA")
            #expect(parts[2] == "7")
            #expect(Array(parts[3..<10]) == [keys.meta, keys.members, keys.seq, keys.log, keys.messages, keys.dedup, keys.dedupExpiry])
            #expect(command.description.hasSuffix(" \(id) \(keys.topic) alice:c-1 86400"), "\(command)")
            #expect(command.argumentCount == 3 + 7 + 7)
            let key = try #require(command.key)
            #expect(HashSlot(key: key) == HashSlot(key: keys.meta), "\(id)")
        }
    }
}
