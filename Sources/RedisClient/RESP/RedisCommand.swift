import CHiredis
import NIOCore

/// A value that can be an argument of a Redis command.
public protocol RedisArgument {
    /// Appends the argument's bytes to a command under construction.
    func append(to command: inout RedisCommand)
}

extension String: RedisArgument {
    public func append(to command: inout RedisCommand) { command.append(bytes: self.utf8) }
}

extension Substring: RedisArgument {
    public func append(to command: inout RedisCommand) { command.append(bytes: self.utf8) }
}

extension Int: RedisArgument {
    public func append(to command: inout RedisCommand) { command.append(bytes: String(self).utf8) }
}

extension Int64: RedisArgument {
    public func append(to command: inout RedisCommand) { command.append(bytes: String(self).utf8) }
}

extension Array: RedisArgument where Element == UInt8 {
    public func append(to command: inout RedisCommand) { command.append(bytes: self) }
}

extension ByteBuffer: RedisArgument {
    public func append(to command: inout RedisCommand) { command.append(bytes: self.readableBytesView) }
}

/// One Redis command: its arguments, kept as one contiguous byte string plus lengths.
///
/// `key` names the key that decides where the command runs; a router from hash slot to
/// connection (Redis Cluster) reads it. Commands without a key run anywhere.
public struct RedisCommand: Sendable {
    @usableFromInline var storage: [UInt8] = []
    @usableFromInline var lengths: [Int] = []
    /// The key that routes the command, when it has one.
    public var key: String?

    public init(_ name: String, key: String? = nil) {
        self.key = key
        self.append(bytes: name.utf8)
    }

    /// A command with room for `bytes` bytes of arguments in all and `arguments` arguments, the
    /// name included, made before the name goes in: its storage is allocated once.
    public init(_ name: String, key: String? = nil, reservingBytes bytes: Int, arguments: Int) {
        self.key = key
        self.storage.reserveCapacity(bytes)
        self.lengths.reserveCapacity(arguments)
        self.append(bytes: name.utf8)
    }

    public init(_ name: String, key: String? = nil, _ arguments: [any RedisArgument]) {
        self.init(name, key: key)
        for argument in arguments { argument.append(to: &self) }
    }

    /// Appends one argument.
    public mutating func append(_ argument: some RedisArgument) {
        argument.append(to: &self)
    }

    /// Appends raw bytes as one argument.
    public mutating func append(bytes: some Sequence<UInt8>) {
        let before = self.storage.count
        self.storage.append(contentsOf: bytes)
        self.lengths.append(self.storage.count - before)
    }

    /// Appends one argument whose bytes `write` appends, after what is there (which it must
    /// leave as it is): a key built of its parts without a string made of them first.
    public mutating func appendArgument(_ write: (inout [UInt8]) -> Void) {
        let before = self.storage.count
        write(&self.storage)
        self.lengths.append(self.storage.count - before)
    }

    public var argumentCount: Int { self.lengths.count }

    /// The command's name, upper-cased (for metrics and logs).
    public var name: String {
        String(decoding: self.storage.prefix(self.lengths.first ?? 0), as: UTF8.self).uppercased()
    }

    /// The command encoded (``encode(into:)``) into a buffer of about its size.
    func encoded(allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 32 + self.storage.count + 16 * self.argumentCount)
        self.encode(into: &buffer)
        return buffer
    }

    /// Encodes the command as a RESP array of bulk strings with hiredis's argv formatter (its
    /// `sds` form, which writes the lengths itself: the plain form calls `sprintf` for each).
    func encode(into buffer: inout ByteBuffer) {
        let count = self.lengths.count
        self.storage.withUnsafeBufferPointer { storage in
            let base = UnsafeRawPointer(storage.baseAddress ?? UnsafePointer(bitPattern: 1)!)
            withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: count) { argv in
                var offset = 0
                for index in 0..<count {
                    argv[index] = (base + offset).assumingMemoryBound(to: CChar.self)
                    offset += self.lengths[index]
                }
                self.lengths.withUnsafeBufferPointer { lengths in
                    var target: sds?
                    let written = redisFormatSdsCommandArgv(&target, Int32(count), argv.baseAddress, lengths.baseAddress)
                    guard written >= 0, let target else {
                        fatalError("redisFormatSdsCommandArgv failed: out of memory")
                    }
                    defer { redisFreeSdsCommand(target) }
                    buffer.writeBytes(UnsafeRawBufferPointer(start: target, count: Int(written)))
                }
            }
        }
    }
}

extension RedisCommand: CustomStringConvertible {
    public var description: String {
        var offset = 0
        var parts = [String]()
        for length in self.lengths {
            parts.append(String(decoding: self.storage[offset..<offset + length], as: UTF8.self))
            offset += length
        }
        return parts.joined(separator: " ")
    }
}
