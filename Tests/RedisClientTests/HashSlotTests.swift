import Testing

@testable import RedisClient

/// The key-to-slot mapping, checked against the Redis Cluster specification's examples.
@Suite struct HashSlotTests {
    @Test func crc16MatchesTheSpecificationsCheckValue() {
        #expect(HashSlot.crc16(Array("123456789".utf8)) == 0x31C3)
        #expect(HashSlot.crc16([]) == 0)
    }

    @Test func slotsOfKnownKeys() {
        // Values as `CLUSTER KEYSLOT` gives them.
        #expect(HashSlot(key: "foo").rawValue == 12182)
        #expect(HashSlot(key: "bar").rawValue == 5061)
        #expect(HashSlot(key: "123456789").rawValue == 0x31C3 % 16384)
        #expect(HashSlot(key: "").rawValue == 0)
    }

    @Test func keysWithTheSameTagShareASlot() {
        #expect(HashSlot(key: "{user1000}.following") == HashSlot(key: "{user1000}.followers"))
        #expect(HashSlot(key: "{user1000}.following") == HashSlot(key: "user1000"))
        #expect(HashSlot(key: "{c1}:log") == HashSlot(key: "{c1}:seq"))
    }

    @Test func hashTagRules() {
        func hashed(_ key: String) -> String {
            let bytes = Array(key.utf8)
            return String(decoding: bytes[HashSlot.hashTag(of: bytes)], as: UTF8.self)
        }
        // An empty tag: the whole key is hashed.
        #expect(hashed("foo{}{bar}") == "foo{}{bar}")
        #expect(HashSlot(key: "foo{}{bar}") != HashSlot(key: "bar"))
        // From the first `{` to the first `}` after it.
        #expect(hashed("foo{{bar}}zap") == "{bar")
        #expect(HashSlot(key: "foo{{bar}}zap") == HashSlot(key: "{bar"))
        // Only the first tag counts.
        #expect(hashed("foo{bar}{zap}") == "bar")
        #expect(HashSlot(key: "foo{bar}{zap}") == HashSlot(key: "bar"))
        // No closing brace, or none at all: the whole key.
        #expect(hashed("foo{bar") == "foo{bar")
        #expect(hashed("}foo{") == "}foo{")
        #expect(hashed("plain") == "plain")
    }

    @Test func slotNumbersAreBounded() {
        #expect(HashSlot(rawValue: 0) != nil)
        #expect(HashSlot(rawValue: 16383) != nil)
        #expect(HashSlot(rawValue: 16384) == nil)
        #expect(HashSlot(rawValue: -1) == nil)
    }
}
