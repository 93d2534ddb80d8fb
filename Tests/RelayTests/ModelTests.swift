import Foundation
import Testing

@testable import Relay

@Suite("Ids, JSON text and keys")
struct ModelTests {
    @Test(arguments: ["a", "Alice_1.x-y", String(repeating: "z", count: 64)])
    func validIDs(id: String) {
        #expect(Identifier.isValid(id))
    }

    @Test(arguments: ["", String(repeating: "z", count: 65), "a b", "a{b}", "é", "a/b", "a:b", "a\u{0}"])
    func invalidIDs(id: String) {
        #expect(!Identifier.isValid(id))
    }

    @Test func madeIDsAreValidUniqueAndTimeOrdered() {
        let ids = (0..<1000).map { index in Identifier.make(prefix: "m", now: 1_764_360_000_000 + UInt64(index)) }
        #expect(ids.allSatisfy(Identifier.isValid))
        #expect(Set(ids).count == ids.count)
        #expect(ids.map { $0.prefix(11) } == ids.map { $0.prefix(11) }.sorted())
        #expect(ids[0].count == 21)
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
            keys.meta, keys.members, keys.seq, keys.log, keys.messages, keys.reads, keys.topic,
            keys.dedup(sender: "u", clientMessageID: "x}{y"),
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
        #expect(files.count == 7)
        for file in files {
            let onDisk = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            #expect(LuaSources.byName[String(file.dropLast(4))] == onDisk, "\(file)")
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

    @Test func refusesNestingDeeperThanTheLimit() {
        let deep = String(repeating: "[", count: StrictJSON.maxDepth + 2) + String(repeating: "]", count: StrictJSON.maxDepth + 2)
        let fine = String(repeating: "[", count: StrictJSON.maxDepth) + String(repeating: "]", count: StrictJSON.maxDepth)
        #expect(!StrictJSON.isValid(Array(deep.utf8)))
        #expect(StrictJSON.isValid(Array(fine.utf8)))
        #expect(!StrictJSON.isValid(Array(String(repeating: "[", count: 30_000).utf8)))
    }
}
