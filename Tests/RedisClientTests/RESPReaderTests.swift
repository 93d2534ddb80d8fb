import NIOCore
import Testing

@testable import RedisClient

@Suite("RESP reader")
struct RESPReaderTests {
    private func parseAll(_ bytes: [UInt8], chunk: Int? = nil) throws -> [RESPValue] {
        let reader = RESPReader()
        var values = [RESPValue]()
        let step = chunk ?? max(bytes.count, 1)
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + step, bytes.count)
            try reader.feed(ByteBuffer(bytes: bytes[offset..<end]))
            while let value = try reader.next() { values.append(value) }
            offset = end
        }
        return values
    }

    private func bulk(_ string: String) -> RESPValue { .bulkString(ByteBuffer(string: string)) }

    @Test func everyRESP2Type() throws {
        let wire = "+OK\r\n-ERR wrong\r\n:42\r\n:-7\r\n$5\r\nhello\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n*2\r\n$1\r\na\r\n:1\r\n"
        let values = try parseAll(Array(wire.utf8))
        #expect(
            values == [
                .simpleString("OK"), .error("ERR wrong"), .integer(42), .integer(-7), bulk("hello"), bulk(""),
                .null, .null, .array([]), .array([bulk("a"), .integer(1)]),
            ]
        )
    }

    /// A subscriber's `message` and `smessage` pushes are read in place into their topic and
    /// payload; every other push, and a reply that is no push, is left to be made a value.
    @Test func messagePushesAreReadInPlace() throws {
        let reader = RESPReader()
        let wire =
            "*3\r\n$8\r\nsmessage\r\n$11\r\nch:{g}:live\r\n$9\r\n7 {\"a\":1}\r\n"
            + "*3\r\n$7\r\nmessage\r\n$1\r\nt\r\n$0\r\n\r\n"
            + "*3\r\n$10\r\nssubscribe\r\n$1\r\nt\r\n:1\r\n"
            + "*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$1\r\nt\r\n$1\r\nx\r\n"
            + "*3\r\n$8\r\nsmessage\r\n$1\r\nt\r\n:5\r\n"
            + "$8\r\nsmessage\r\n"
        try reader.feed(ByteBuffer(string: wire))
        var read: [String] = []
        while let reply = try reader.nextReply() {
            switch RedisChannelHandler.message(reply, allocator: ByteBufferAllocator()) {
            case .message(let topic, let payload)?: read.append("\(topic)|\(String(buffer: payload))")
            case .other?: Issue.record("a message is never .other")
            case nil: read.append("-")
            }
        }
        #expect(read == ["ch:{g}:live|7 {\"a\":1}", "t|", "-", "-", "-", "-"])
    }

    @Test func nestedArrays() throws {
        let wire = "*2\r\n*2\r\n*1\r\n:1\r\n$-1\r\n*3\r\n+x\r\n-E y\r\n*0\r\n"
        let values = try parseAll(Array(wire.utf8))
        #expect(
            values == [
                .array([.array([.array([.integer(1)]), .null]), .array([.simpleString("x"), .error("E y"), .array([])])])
            ]
        )
    }

    @Test func nestingDeeperThanHiredisAllowsIsAnError() throws {
        let wire = String(repeating: "*1\r\n", count: 9) + ":1\r\n"
        #expect(throws: RedisError.self) { try parseAll(Array(wire.utf8)) }
    }

    @Test func splitAtEveryByteBoundary() throws {
        let wire = Array("*3\r\n$3\r\nfoo\r\n:12345\r\n*2\r\n+OK\r\n$-1\r\n-ERR nope\r\n$4\r\nab\r\n\r\n".utf8)
        let expected = try parseAll(wire)
        #expect(expected.count == 3)
        for split in 1..<wire.count {
            let reader = RESPReader()
            var values = [RESPValue]()
            try reader.feed(ByteBuffer(bytes: wire[..<split]))
            while let value = try reader.next() { values.append(value) }
            try reader.feed(ByteBuffer(bytes: wire[split...]))
            while let value = try reader.next() { values.append(value) }
            #expect(values == expected, "split at \(split)")
        }
        #expect(try parseAll(wire, chunk: 1) == expected)
    }

    @Test func binaryBulkStrings() throws {
        let payload: [UInt8] = [0, 13, 10, 36, 42, 255, 0, 13, 10]
        let wire = Array("$\(payload.count)\r\n".utf8) + payload + Array("\r\n".utf8)
        let values = try parseAll(wire)
        #expect(values.first?.bytes == payload)
    }

    @Test func tenMebibyteBulkString() throws {
        let size = 10 * 1024 * 1024
        var payload = [UInt8](repeating: 0, count: size)
        for index in stride(from: 0, to: size, by: 4093) { payload[index] = UInt8(truncatingIfNeeded: index) }
        let wire = Array("$\(size)\r\n".utf8) + payload + Array("\r\n+after\r\n".utf8)
        let values = try parseAll(wire, chunk: 65_536)
        #expect(values.count == 2)
        #expect(values[0].bytes == payload)
        #expect(values[1] == .simpleString("after"))
    }

    @Test func aLargeReplyIsNotKeptOnceRead() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "*2\r\n$3\r\nabc\r\n:1\r\n"))
        #expect(try reader.next() == .array([bulk("abc"), .integer(1)]))
        let kept = reader.keptBytes
        #expect(kept > 0, "a small reply's buffer is kept for the next")
        let payload = [UInt8](repeating: 7, count: 1024 * 1024)
        try reader.feed(ByteBuffer(bytes: Array("*1\r\n$\(payload.count)\r\n".utf8) + payload + Array("\r\n".utf8)))
        #expect(try reader.next()?.array?.first?.bytes == payload)
        // Let go of when the next reply is asked for (the one handed out stays readable until then).
        #expect(try reader.next() == nil)
        #expect(reader.keptBytes <= 256 * 1024, "a mebibyte reply's buffer is let go")
        try reader.feed(ByteBuffer(string: "$2\r\nok\r\n"))
        #expect(try reader.next() == bulk("ok"))
    }

    @Test func aReplyIsReadInPlaceWithACursor() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "*3\r\n*2\r\n:1\r\n$1\r\na\r\n+OK\r\n$-1\r\n-ERR x\r\n"))
        let reply = try #require(try reader.nextReply())
        #expect(reply.value() == .array([.array([.integer(1), bulk("a")]), .simpleString("OK"), .null]))
        var cursor = reply.cursor
        guard case .array(count: 3)? = cursor.next(), case .array(count: 2)? = cursor.nextValue(),
            case .simpleString(let ok)? = cursor.next(), case .null? = cursor.next()
        else {
            Issue.record("the cursor read the reply out of order")
            return
        }
        #expect(String(decoding: ok, as: UTF8.self) == "OK")
        #expect(cursor.next() == nil)
        #expect(reply.errorMessage == nil)
        let error = try #require(try reader.nextReply())
        #expect(error.errorMessage == "ERR x")
        #expect(try reader.nextReply() == nil)
    }

    @Test func garbageIsAStickyProtocolError() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "?what\r\n"))
        #expect(throws: RedisError.self) { try reader.next() }
        #expect(throws: RedisError.self) { try reader.next() }
    }
}

@Suite("Command encoding")
struct RedisCommandTests {
    @Test func encodesArgvAsRESPArrayOfBulkStrings() {
        var command = RedisCommand("SET", key: "k", ["k", "v a"])
        command.append(Int64(-12))
        var buffer = ByteBuffer()
        command.encode(into: &buffer)
        #expect(String(buffer: buffer) == "*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv a\r\n$3\r\n-12\r\n")
        #expect(command.name == "SET")
        #expect(command.key == "k")
    }

    @Test func binarySafeArguments() {
        let bytes: [UInt8] = [0, 13, 10, 255]
        let command = RedisCommand("ECHO", [bytes, ""])
        var buffer = ByteBuffer()
        command.encode(into: &buffer)
        #expect(Array(buffer.readableBytesView) == Array("*3\r\n$4\r\nECHO\r\n$4\r\n".utf8) + bytes + Array("\r\n$0\r\n\r\n".utf8))
    }

    @Test func roundTripsThroughTheReader() throws {
        let command = RedisCommand("XADD", ["s", "1-0", "e", "{\"a\":\"\r\n\"}"])
        var buffer = ByteBuffer()
        command.encode(into: &buffer)
        let reader = RESPReader()
        try reader.feed(buffer)
        let value = try #require(try reader.next())
        #expect(value.array?.compactMap(\.string) == ["XADD", "s", "1-0", "e", "{\"a\":\"\r\n\"}"])
    }
}

@Suite("Scripts and configuration")
struct RedisScriptAndConfigurationTests {
    @Test func sha1MatchesKnownVectors() {
        #expect(SHA1.hexDigest("".utf8) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(SHA1.hexDigest("abc".utf8) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(
            SHA1.hexDigest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
                == "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        )
        #expect(SHA1.hexDigest(Array(repeating: UInt8(ascii: "a"), count: 1_000_000)) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
    }

    @Test func parsesURLs() throws {
        let plain = try RedisConfiguration(url: "redis://127.0.0.1:6380")
        #expect(plain.host == "127.0.0.1" && plain.port == 6380 && plain.password == nil && plain.database == 0)
        let full = try RedisConfiguration(url: "redis://:s%40cret@redis.local:7000/3")
        #expect(full.host == "redis.local" && full.port == 7000 && full.password == "s@cret" && full.database == 3 && full.username == nil)
        let user = try RedisConfiguration(url: "redis://bob:pw@[::1]:6379/")
        #expect(user.username == "bob" && user.password == "pw" && user.host == "::1" && user.database == 0)
        let hostOnly = try RedisConfiguration(url: "redis://cache")
        #expect(hostOnly.host == "cache" && hostOnly.port == 6379)
    }

    @Test(arguments: ["http://x:1", "redis://", "redis://h:0", "redis://h:99999", "redis://h:p", "redis://h:1/x", "redis://h:1/-1"])
    func rejectsBadURLs(url: String) {
        #expect(throws: RedisError.self) { try RedisConfiguration(url: url) }
    }
}
