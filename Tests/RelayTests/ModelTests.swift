import Foundation
import NIOCore
import Testing

@testable import RedisClient
@testable import Relay

@Suite("Ids, JSON text and keys")
struct ModelTests {
    @Test(arguments: ["a", "Alice_1.x-y", String(repeating: "z", count: 64), "...", ".a", "a.", "-", "_"])
    func validIDs(id: String) {
        #expect(Identifier.isValid(id))
    }

    @Test(arguments: ["", String(repeating: "z", count: 65), "a b", "a{b}", "é", "a/b", "a:b", "a\u{0}", ".", ".."])
    func invalidIDs(id: String) {
        #expect(!Identifier.isValid(id))
    }

    @Test func madeIDsAreValidUniqueAndTimeOrdered() {
        let ids = (0..<1000).map { index in Identifier.make(prefix: "m", now: 1_764_360_000_000 + UInt64(index)) }
        #expect(ids.allSatisfy(Identifier.isValid))
        #expect(Set(ids).count == ids.count)
        #expect(ids.map { $0.prefix(11) } == ids.map { $0.prefix(11) }.sorted())
        #expect(ids[0].count == 21)
        // The clock's 50 bits in Crockford base32, most significant first.
        #expect(ids[0].hasPrefix("m01kb60t4g0"))
        #expect(Identifier.make(prefix: "ch-", now: 0).hasPrefix("ch-0000000000"))
        // Made in the same millisecond, ids differ by their random part alone (drawn 256 words
        // at a time: these cross several draws).
        let sameMillisecond = (0..<1000).map { _ in Identifier.make(prefix: "m", now: 7) }
        #expect(Set(sameMillisecond).count == sameMillisecond.count)
    }

    @Test func quotedTextIsJSONThatDecodesToTheSameString() throws {
        let samples = [
            "", "plain", "quote \" backslash \\ slash /", "new\nline\ttab\r", "\u{0}\u{1}\u{1f}\u{7f}", "🚀 日本語 é",
            "sep\u{2028}and\u{2029}", "</script>",
        ]
        for sample in samples {
            let quoted = JSONText.quoted(sample)
            let decoded = try JSONDecoder().decode(String.self, from: Data(quoted.utf8))
            #expect(decoded == sample, "\(quoted)")
            #expect(!quoted.unicodeScalars.contains { $0.value < 0x20 || $0 == "\u{2028}" || $0 == "\u{2029}" })
            var buffer = ByteBuffer(string: "[")
            JSONText.writeQuoted(sample, to: &buffer)
            #expect(String(buffer: buffer) == "[" + quoted, "written to a buffer, the same")
        }
    }

    /// The ack's seq and message_id, and a member event's type and user, are read from the
    /// logged event's leading fields, never from the text that follows them, whatever it holds.
    @Test func anEventsLeadingFieldsAreReadFromItsJSON() {
        let text = JSONText.quoted("\"seq\":99,\"message_id\":\"fake\",\"type\":\"member_left\" 🚀")
        let event =
            "{\"channel_id\":\"c-1\",\"seq\":42,\"type\":\"message\",\"message_id\":\"m0123\",\"sender_id\":\"alice\",\"text\":\(text),\"created_at\":1764360000123}"
        #expect(EventJSON.field(.seq, in: event) == "42")
        #expect(EventJSON.field(.messageID, in: event) == "m0123")
        #expect(EventJSON.field(.type, in: event) == "message")
        #expect(EventJSON.field(EventJSON.Key("channel_id"), in: event) == "c-1")
        #expect(EventJSON.field(.createdAt, in: event) == "1764360000123")
        #expect(ChatStore.createdAt(ofEvent: Array(event.utf8)) == 1_764_360_000_123)
        #expect(EventJSON.field(.userID, in: event) == nil)
        #expect(EventMembership.of(json: event) == nil)
        #expect(EventJSON.field(.seq, in: "") == nil)
        #expect(EventJSON.field(.seq, in: "{\"seq\":") == "")
        #expect(EventJSON.field(.messageID, in: "{\"message_id\":\"unterminated") == nil)
        let left = "{\"channel_id\":\"c-1\",\"seq\":7,\"type\":\"member_left\",\"user_id\":\"bob\",\"sender_id\":\"bob\",\"created_at\":1}"
        #expect(EventMembership.of(json: left) == .left(user: "bob"))
        #expect(EventMembership.of(json: ByteBuffer(string: left.replacingOccurrences(of: "left", with: "joined"))) == .joined(user: "bob"))
    }

    @Test func aLogEntrysSeqIsReadFromItsID() {
        #expect(ChatStore.seq(ofEntryID: "42-0".utf8) == 42)
        #expect(ChatStore.seq(ofEntryID: "9007199254740993-0".utf8) == 9_007_199_254_740_993)
        #expect(ChatStore.seq(ofEntryID: "7".utf8) == 7)
        for bad in ["", "-0", "x-0", "1x-0", "1234567890123456789-0"] {
            #expect(ChatStore.seq(ofEntryID: bad.utf8) == nil, "\(bad)")
        }
    }

    @Test func aPageOfTheLogIsReadWhereTheReplyLies() throws {
        let left = "{\"channel_id\":\"c-1\",\"seq\":2,\"type\":\"member_left\",\"user_id\":\"bob\"}"
        let wire =
            "*3\r\n"
            // Another field first, with an array for its value.
            + "*2\r\n$3\r\n1-0\r\n*4\r\n$1\r\nx\r\n*1\r\n:5\r\n$1\r\ne\r\n$9\r\n{\"seq\":1}\r\n"
            + "*2\r\n$3\r\n2-0\r\n*2\r\n$1\r\ne\r\n$\(left.utf8.count)\r\n\(left)\r\n"
            // No event: passed over.
            + "*2\r\n$3\r\n3-0\r\n*2\r\n$1\r\nf\r\n$1\r\n1\r\n"
        func page(_ wire: String) throws -> [ChatStore.LogEvent] {
            let reader = RESPReader()
            try reader.feed(ByteBuffer(string: wire))
            return try ChatStore.logPage(try #require(try reader.nextReply()))
        }
        let events = try page(wire)
        #expect(events.map(\.seq) == [1, 2])
        #expect(events.map(\.frame) == [WebSocketWire.text("{\"seq\":1}"), WebSocketWire.text(left)])
        #expect(events.map(\.membership) == [nil, .left(user: "bob")])
        #expect(try page("*0\r\n").isEmpty)
        for malformed in [":1\r\n", "*1\r\n*2\r\n$1\r\nx\r\n*0\r\n", "*1\r\n*1\r\n$3\r\n1-0\r\n", "*1\r\n*2\r\n$3\r\n1-0\r\n$1\r\ne\r\n"] {
            #expect(throws: RedisError.self, "\(malformed)") { try page(malformed) }
        }
    }

    @Test func aDMIDDependsOnThePairOnly() {
        let id = ChatStore.dmID("alice", "bob")
        #expect(id == ChatStore.dmID("bob", "alice"))
        #expect(id != ChatStore.dmID("alice", "carol"))
        #expect(id.hasPrefix("dm-") && id.count == 35 && Identifier.isValid(id))
        // "a\nb" + "c" must not collide with "a" + "b\nc": ids cannot hold a newline, so the separator is safe.
        #expect(ChatStore.dmID("ab", "c") != ChatStore.dmID("a", "bc"))
    }

    @Test func keysOfAChannelShareItsHashTag() {
        let keys = RelayKeys.Channel("c-1")
        let all = [
            keys.meta, keys.members, keys.seq, keys.log, keys.messages, keys.reads, keys.topic, keys.dedup, keys.dedupExpiry,
        ]
        for key in all {
            let open = try! #require(key.firstIndex(of: "{"))
            let close = try! #require(key[open...].firstIndex(of: "}"))
            #expect(key[key.index(after: open)..<close] == "c-1", "\(key)")
        }
        #expect(RelayKeys.channelID(fromTopic: keys.topic) == "c-1")
        #expect(RelayKeys.channelID(fromTopic: RelayKeys.User("u").topic) == nil)
    }

    @Test func theBinaryCarriesEveryLuaScriptAsWritten() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let directory = root.appendingPathComponent("lua")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".lua") }
        #expect(files.count == 9)
        for file in files {
            let onDisk = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            #expect(LuaSources.byName[String(file.dropLast(4))] == onDisk, "\(file)")
        }
    }
}

@Suite("Redis errors as the API says them")
struct RedisErrorAnswerTests {
    /// A Redis that cannot take a command now is `unavailable` (503), said in the API's words:
    /// not the reply's text, which names a script's hash and line.
    @Test func anErrorReplyThatMeansNotNowIsUnavailableInPlainWords() {
        let reply =
            "OOM command not allowed when used memory > 'maxmemory'. script: b2b7e3742de0c51641fa2edafa941349e14c4e68, on @user_script:215."
        let oom = APIError(redis: RedisError(.serverError, reply))
        #expect(oom.code == .unavailable)
        #expect(oom.message == "Redis is out of memory (maxmemory reached): try again later")
        for code in ["LOADING", "BUSY", "READONLY", "MASTERDOWN", "UNBLOCKED", "TRYAGAIN", "CLUSTERDOWN"] {
            let error = APIError(redis: RedisError(.serverError, "\(code) something"))
            #expect(error.code == .unavailable && !error.message.contains("something"), "\(code): \(error.message)")
        }
        #expect(APIError(redis: RedisError(.serverError, "WRONGTYPE x")).code == .internal)
    }
}

@Suite("Lua scripts behind their prelude")
struct RelayScriptsTests {
    @Test func theRetentionSettingsAreWrittenIntoThePrelude() {
        let plain = RelayScripts.prelude(retention: RelayRetention())
        #expect(plain.contains(RelayScripts.retentionLine))
        let trimmed = RelayScripts.prelude(retention: RelayRetention(maxEvents: 500, maxAgeDays: 30))
        #expect(trimmed.contains("local RETAIN_EVENTS, RETAIN_MS = 500, 2592000000"))
        #expect(!trimmed.contains(RelayScripts.retentionLine))
        #expect(RelayScripts(retention: RelayRetention(maxEvents: 5)).send.sha1 != RelayScripts().send.sha1)
    }

    /// Scripts that leave publishing to the relay keep their payloads and answer them beside
    /// their reply; the others publish at once. Both run in `ReplicaWaitTests`.
    @Test func scriptsThatLeavePublishingToTheRelayAnswerTheirPayloads() {
        let publishing = RelayScripts()
        #expect(publishing.publishes)
        #expect(publishing.send.source.contains(RelayScripts.deferredLine))
        #expect(!publishing.send.source.contains("return {reply, DEFERRED}"))
        let deferring = RelayScripts(publishing: false)
        #expect(!deferring.publishes)
        for script in [deferring.send, deferring.change, deferring.createChannel, deferring.addMembers, deferring.removeMember] {
            #expect(!script.source.contains(RelayScripts.deferredLine))
            #expect(script.source.contains("local DEFERRED = {}"))
            #expect(script.source.hasSuffix("return {reply, DEFERRED}\n"))
        }
    }
}

@Suite("Strict JSON")
struct StrictJSONTests {
    @Test(arguments: [
        "{}", "[]", "0", "-0.5e+3", "\"a\\u00e9\\n\"", "{\"a\":[1,2,{\"b\":null}],\"c\":true,\"d\":false}", " \t\n{ \"a\" : 1 } ",
        "\"🚀\"",
    ])
    func accepts(text: String) {
        #expect(StrictJSON.isValid(Array(text.utf8)))
    }

    @Test(arguments: [
        "", "{", "{\"a\":1,}", "[1,]", "{\"a\" 1}", "{'a':1}", "01", "1.", ".5", "1e", "+1", "\"\\x\"", "\"a\u{1}\"", "tru", "nul",
        "{} {}", "[1 2]", "{\"a\":1}x", "NaN", "\"unterminated",
    ])
    func refuses(text: String) {
        #expect(!StrictJSON.isValid(Array(text.utf8)))
    }

    @Test(arguments: [
        #"{"a":1,"a":2}"#, #"{"a":1,"\u0061":2}"#, #"{"x":{"k":1,"k":1}}"#, #"[{"a":1},{"b":1,"b":1}]"#,
        #"{"\ud83d\ude80":1,"🚀":2}"#,
    ])
    func refusesAKeyGivenTwice(text: String) {
        #expect(!StrictJSON.isValid(Array(text.utf8)))
    }

    @Test func acceptsEqualKeysInDifferentObjects() {
        #expect(StrictJSON.isValid(Array(#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":1}]}"#.utf8)))
    }

    @Test(
        arguments: [
            [0xFF], [0xC0, 0x80], [0xC1, 0xBF], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80], [0xF0, 0x80, 0x80, 0x80],
            [0xF4, 0x90, 0x80, 0x80], [0xF5, 0x80, 0x80, 0x80], [0x80], [0xC3], [0xE2, 0x82], [0xE2, 0x28, 0xA1],
        ] as [[UInt8]]
    )
    func refusesInvalidUTF8InAString(_ bad: [UInt8]) {
        #expect(!StrictJSON.isValid([UInt8(ascii: "\"")] + bad + [UInt8(ascii: "\"")]))
    }

    @Test func refusesALoneSurrogateEscape() {
        #expect(!StrictJSON.isValid(Array(#""\ud800""#.utf8)))
        #expect(!StrictJSON.isValid(Array(#""\udc00x""#.utf8)))
    }

    @Test func parsesValuesWithEscapesUnescaped() throws {
        let value = try #require(StrictJSON.parse(Array(#"{"t":"a\"\u00e9\ud83d\ude80\n","n":-12,"b":[true,null]}"#.utf8)))
        #expect(value["t"]?.string == "a\"é🚀\n")
        #expect(value["n"]?.int64 == -12)
        #expect(value["b"] == .array([.bool(true), .null]))
        #expect(StrictJSON.parse(Array(#"{"n":1.5}"#.utf8))?["n"]?.int64 == nil)
    }

    /// Bytes read where they lie (an array, a buffer's view) and bytes copied first (a collection
    /// with no contiguous storage) parse alike, strings with and without escapes.
    @Test func parsesBytesWhereverTheyLie() throws {
        let text = #"{"plain":"café été","e":"\t\u00e9\\","long":"a string longer than fifteen bytes","n":7}"#
        let bytes = Array(text.utf8)
        let value = try #require(StrictJSON.parse(bytes))
        #expect(value["plain"]?.string == "café été")
        #expect(value["e"]?.string == "\t\u{e9}\\")
        #expect(value["long"]?.string == "a string longer than fifteen bytes")
        #expect(StrictJSON.parse(ByteBuffer(bytes: bytes).readableBytesView) == value)
        #expect(StrictJSON.parse(bytes.lazy.map { $0 }) == value)
        #expect(StrictJSON.parse(Array(#"{"a":"b\"#.utf8).lazy.map { $0 }) == nil)
    }

    /// Names are the same only if their UTF-8 is: canonically equivalent names (Swift's `String`
    /// equality) are two names, not one given twice; the same name escaped is one.
    @Test func namesAreComparedByTheirBytes() throws {
        let pairs = [#""\u00e9":1,"e\u0301":2"#, #""\u212a":1,"K":2"#, #""\u212b":1,"\u00c5":2"#, #""\u2126":1,"\u03a9":2"#]
        for pair in pairs {
            let value = try #require(StrictJSON.parse(Array("{\(pair)}".utf8)), "\(pair)")
            #expect(value["K"]?.int64 == (pair.contains("212a") ? 2 : nil))
        }
        #expect(StrictJSON.parse(Array(#"{"text":1,"te\u0078t":2}"#.utf8)) == nil, "one name, escaped")
    }

    @Test func refusesNestingDeeperThanTheLimit() {
        func nested(_ depth: Int, _ inner: String = "") -> [UInt8] {
            Array((String(repeating: "[", count: depth) + inner + String(repeating: "]", count: depth)).utf8)
        }
        #expect(StrictJSON.isValid(nested(StrictJSON.maxDepth)))
        #expect(StrictJSON.isValid(nested(StrictJSON.maxDepth, "0")))
        #expect(!StrictJSON.isValid(nested(StrictJSON.maxDepth + 1)), "an empty container one too deep")
        #expect(!StrictJSON.isValid(nested(StrictJSON.maxDepth + 1, "0")))
        #expect(
            !StrictJSON.isValid(
                Array((String(repeating: "[", count: StrictJSON.maxDepth) + "{}" + String(repeating: "]", count: StrictJSON.maxDepth)).utf8)
            )
        )
        #expect(!StrictJSON.isValid(Array(String(repeating: "[", count: 30_000).utf8)))
    }

    @Test func scanOrderFollowsRedisCursorsAcrossTableSizes() {
        // A table of 8 buckets is scanned 0, 4, 2, 6, 1, 5, 3, 7, then 0 (the end).
        let eight: [UInt64] = [4, 2, 6, 1, 5, 3, 7, 0]
        #expect(eight.map(ChatStore.scanOrder) == eight.map(ChatStore.scanOrder).sorted())
        #expect(Set(eight.map(ChatStore.scanOrder)).count == eight.count)
        // In a table of 16, cursor 2 is followed by 10, before 6 in either size.
        #expect(ChatStore.scanOrder(2) < ChatStore.scanOrder(10) && ChatStore.scanOrder(10) < ChatStore.scanOrder(6))
        #expect(ChatStore.scanOrder(0) == .max)
    }
}
