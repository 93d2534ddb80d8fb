import NIOCore

/// A command encoded once, for one sent again and again for its effect alone (the refresh of a
/// key's time to live): ``RedisClient/executeWithoutReplies(_:batch:)`` copies its bytes into
/// the write, where a ``RedisCommand`` would be encoded by hiredis each time.
public final class RedisEncodedCommand: Sendable {
    /// The command itself, for where it goes as one (a cluster's router, a pipeline).
    public let command: RedisCommand
    /// Its RESP bytes, in an array of their size (a buffer would round its capacity up to a
    /// power of two: the presence refresh keeps one of these per connected user).
    let bytes: [UInt8]

    public init(_ command: RedisCommand) {
        self.command = command
        self.bytes = Array(command.encoded(allocator: ByteBufferAllocator()).readableBytesView)
    }
}
