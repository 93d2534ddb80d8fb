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
/// a thousand allocations and frees in hiredis before it was copied into ``RESPValue``s.
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

    /// The next complete reply, or `nil` when more bytes are needed.
    func next() throws(RedisError) -> RESPValue? {
        var raw: UnsafeMutableRawPointer?
        guard redisReaderGetReply(self.reader, &raw) == REDIS_OK else {
            throw RedisError(.protocolViolation, self.errorMessage)
        }
        guard raw != nil else { return nil }
        defer { relay_resp_tape_reset(self.tape) }
        let tape = self.tape.pointee
        guard let nodes = tape.nodes, tape.node_count > 0 else {
            throw RedisError(.protocolViolation, "RESP parse error: a reply with no value")
        }
        var index = 0
        return self.value(nodes, count: tape.node_count, bytes: tape.bytes, at: &index)
    }

    /// The bytes the tape keeps for the next reply.
    var keptBytes: Int { self.tape.pointee.byte_capacity }

    private var errorMessage: String {
        withUnsafeBytes(of: self.reader.pointee.errstr) { bytes in
            let chars = bytes.prefix { $0 != 0 }
            return "RESP parse error: " + String(decoding: chars, as: UTF8.self)
        }
    }

    /// The value at `index` on the tape (an array with its elements after it); moves `index` past it.
    private func value(
        _ nodes: UnsafeMutablePointer<relay_resp_node>,
        count: Int,
        bytes: UnsafeMutablePointer<CChar>?,
        at index: inout Int
    ) -> RESPValue {
        precondition(index < count, "a reply's array has fewer elements on the tape than it said")
        let node = nodes[index]
        index += 1
        switch node.type {
        case REDIS_REPLY_STRING:
            return .bulkString(self.buffer(bytes, node))
        case REDIS_REPLY_STATUS:
            return .simpleString(String(buffer: self.buffer(bytes, node)))
        case REDIS_REPLY_ERROR:
            return .error(String(buffer: self.buffer(bytes, node)))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(node.integer))
        case REDIS_REPLY_NIL:
            return .null
        case REDIS_REPLY_ARRAY:
            var elements = [RESPValue]()
            elements.reserveCapacity(Int(node.count))
            for _ in 0..<node.count {
                elements.append(self.value(nodes, count: count, bytes: bytes, at: &index))
            }
            return .array(elements)
        default:
            preconditionFailure("hiredis returned an unknown reply type \(node.type)")
        }
    }

    private func buffer(_ bytes: UnsafeMutablePointer<CChar>?, _ node: relay_resp_node) -> ByteBuffer {
        guard let bytes, node.length > 0 else { return self.allocator.buffer(capacity: 0) }
        return self.allocator.buffer(bytes: UnsafeRawBufferPointer(start: bytes + node.offset, count: node.length))
    }
}
