import CHiredis
import NIOCore

/// Parses RESP2 replies with hiredis's reader.
///
/// Feed it every byte that arrives, then pull replies with ``next()`` until it returns `nil`.
/// A parse error is sticky: after ``next()`` throws, discard the reader and its connection.
/// Not thread-safe: one reader belongs to one channel handler, on its event loop.
final class RESPReader {
    private let reader: UnsafeMutablePointer<redisReader>
    private let allocator = ByteBufferAllocator()

    init() {
        guard let reader = redisReaderCreate() else {
            fatalError("redisReaderCreate failed: out of memory")
        }
        self.reader = reader
    }

    deinit {
        redisReaderFree(self.reader)
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
        guard let raw else { return nil }
        defer { freeReplyObject(raw) }
        return self.copy(raw.assumingMemoryBound(to: redisReply.self))
    }

    private var errorMessage: String {
        withUnsafeBytes(of: self.reader.pointee.errstr) { bytes in
            let chars = bytes.prefix { $0 != 0 }
            return "RESP parse error: " + String(decoding: chars, as: UTF8.self)
        }
    }

    private func copy(_ reply: UnsafeMutablePointer<redisReply>) -> RESPValue {
        let reply = reply.pointee
        switch reply.type {
        case REDIS_REPLY_STRING:
            return .bulkString(self.buffer(reply.str, reply.len))
        case REDIS_REPLY_STATUS:
            return .simpleString(String(buffer: self.buffer(reply.str, reply.len)))
        case REDIS_REPLY_ERROR:
            return .error(String(buffer: self.buffer(reply.str, reply.len)))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(reply.integer))
        case REDIS_REPLY_NIL:
            return .null
        case REDIS_REPLY_ARRAY:
            var elements = [RESPValue]()
            elements.reserveCapacity(reply.elements)
            for index in 0..<reply.elements {
                elements.append(self.copy(reply.element[index]!))
            }
            return .array(elements)
        default:
            preconditionFailure("hiredis returned an unknown reply type \(reply.type)")
        }
    }

    private func buffer(_ pointer: UnsafeMutablePointer<CChar>?, _ count: Int) -> ByteBuffer {
        guard let pointer, count > 0 else { return self.allocator.buffer(capacity: 0) }
        return self.allocator.buffer(bytes: UnsafeRawBufferPointer(start: pointer, count: count))
    }
}
