import CHiredis
import NIOCore

/// Parses RESP2 replies with hiredis's reader.
///
/// Feed it every byte that arrives, then pull replies with ``next()`` until it returns `nil`.
/// A parse error is sticky: after ``next()`` throws, discard the reader and its connection.
/// Not thread-safe: one reader belongs to one channel handler, on its event loop.
///
/// hiredis builds each reply on a flat tape (`relay_resp_tape`, in the `CHiredis` shim) rather
/// than as its own reply objects: a node per value, the strings' bytes one after another, in
/// two buffers kept from reply to reply. A page of the log (200 entries, five values each) was
/// about two thousand allocations and frees in hiredis before it was copied into ``RESPValue``s.
final class RESPReader {
    private let reader: UnsafeMutablePointer<redisReader>
    private let tape: UnsafeMutablePointer<relay_resp_tape>
    private let allocator = ByteBufferAllocator()

    init() {
        self.tape = .allocate(capacity: 1)
        self.tape.initialize(to: relay_resp_tape())
        guard let reader = relay_resp_tape_reader_create(self.tape) else {
            fatalError("redisReaderCreate failed: out of memory")
        }
        self.reader = reader
    }

    deinit {
        // The reader first: it discards a reply it was building, on the tape.
        redisReaderFree(self.reader)
        relay_resp_tape_free(self.tape)
        self.tape.deallocate()
    }

    /// Appends bytes that arrived from the server.
    func feed(_ buffer: ByteBuffer) throws(RedisError) {
        let status = buffer.withUnsafeReadableBytes { bytes -> Int32 in
            guard let base = bytes.baseAddress, bytes.count > 0 else { return REDIS_OK }
            return redisReaderFeed(self.reader, base.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        if status != REDIS_OK {
            throw RedisError(.protocolViolation, self.errorMessage)
        }
    }

    /// Whether the tape holds a reply handed out by ``nextReply()``, to be let go of first.
    private var holdsReply = false

    /// The next complete reply, or `nil` when more bytes are needed.
    func next() throws(RedisError) -> RESPValue? {
        try self.nextReply()?.value(allocator: self.allocator)
    }

    /// The next complete reply as it lies on the tape, or `nil` when more bytes are needed. It
    /// stays valid until the next call; read it, or make a ``RESPValue`` of it, before then.
    func nextReply() throws(RedisError) -> RESPReply? {
        if self.holdsReply {
            relay_resp_tape_reset(self.tape)
            self.holdsReply = false
        }
        var raw: UnsafeMutableRawPointer?
        guard redisReaderGetReply(self.reader, &raw) == REDIS_OK else {
            throw RedisError(.protocolViolation, self.errorMessage)
        }
        guard raw != nil else { return nil }
        self.holdsReply = true
        let tape = self.tape.pointee
        guard let nodes = tape.nodes, tape.node_count > 0 else {
            throw RedisError(.protocolViolation, "RESP parse error: a reply with no value")
        }
        return RESPReply(nodes: nodes, count: tape.node_count, bytes: tape.bytes.map { UnsafeRawPointer($0) })
    }

    /// The bytes the tape keeps for the next reply.
    var keptBytes: Int { self.tape.pointee.byte_capacity }

    private var errorMessage: String {
        withUnsafeBytes(of: self.reader.pointee.errstr) { bytes in
            let chars = bytes.prefix { $0 != 0 }
            return "RESP parse error: " + String(decoding: chars, as: UTF8.self)
        }
    }
}

/// A reply as it lies on a ``RESPReader``'s tape, read in place: no ``RESPValue`` (and no
/// allocation per string) is made of it unless asked for.
///
/// Valid only while the reader hands it out: a caller that decodes a reply with it
/// (`RedisConnection/execute(_:asking:on:decode:)`) must copy what it keeps.
package struct RESPReply {
    fileprivate let nodes: UnsafePointer<relay_resp_node>
    fileprivate let count: Int
    fileprivate let bytes: UnsafeRawPointer?

    /// One value of the reply; a string's bytes are valid only while the reply is.
    package enum Item {
        case array(count: Int)
        case bulkString(UnsafeRawBufferPointer)
        case simpleString(UnsafeRawBufferPointer)
        case error(UnsafeRawBufferPointer)
        case integer(Int64)
        case null
    }

    /// Reads the reply's values in order: an array, then its elements.
    package struct Cursor {
        fileprivate let reply: RESPReply
        fileprivate var index = 0

        /// The next value, or nil past the reply's last.
        package mutating func next() -> Item? {
            guard self.index < self.reply.count else { return nil }
            defer { self.index += 1 }
            return self.reply.item(at: self.index)
        }

        /// The next value whole: an array comes with its elements passed over.
        package mutating func nextValue() -> Item? {
            let item = self.next()
            if case .array(let count)? = item {
                for _ in 0..<count { _ = self.nextValue() }
            }
            return item
        }
    }

    package var cursor: Cursor { Cursor(reply: self) }

    /// An error reply's message.
    var errorMessage: String? {
        guard case .error(let message) = self.item(at: 0) else { return nil }
        return String(decoding: message, as: UTF8.self)
    }

    private func item(at index: Int) -> Item {
        let node = self.nodes[index]
        switch node.type {
        case REDIS_REPLY_STRING: return .bulkString(self.bytes(of: node))
        case REDIS_REPLY_STATUS: return .simpleString(self.bytes(of: node))
        case REDIS_REPLY_ERROR: return .error(self.bytes(of: node))
        case REDIS_REPLY_INTEGER: return .integer(Int64(node.integer))
        case REDIS_REPLY_NIL: return .null
        case REDIS_REPLY_ARRAY: return .array(count: Int(node.count))
        default: preconditionFailure("hiredis returned an unknown reply type \(node.type)")
        }
    }

    private func bytes(of node: relay_resp_node) -> UnsafeRawBufferPointer {
        guard let bytes = self.bytes, node.length > 0 else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: bytes + node.offset, count: node.length)
    }

    /// The reply as a ``RESPValue``, copied off the tape.
    func value(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> RESPValue {
        var cursor = self.cursor
        return Self.value(&cursor, allocator: allocator)
    }

    private static func value(_ cursor: inout Cursor, allocator: ByteBufferAllocator) -> RESPValue {
        guard let item = cursor.next() else {
            preconditionFailure("a reply's array has fewer elements on the tape than it said")
        }
        switch item {
        case .bulkString(let bytes): return .bulkString(allocator.buffer(bytes: bytes))
        case .simpleString(let bytes): return .simpleString(String(decoding: bytes, as: UTF8.self))
        case .error(let bytes): return .error(String(decoding: bytes, as: UTF8.self))
        case .integer(let value): return .integer(value)
        case .null: return .null
        case .array(let count):
            var elements = [RESPValue]()
            elements.reserveCapacity(count)
            for _ in 0..<count { elements.append(Self.value(&cursor, allocator: allocator)) }
            return .array(elements)
        }
    }
}
