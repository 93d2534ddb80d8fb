import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// Writes whole, encoded frames of one WebSocket straight to its socket, past every outbound
/// handler of its pipeline: after the upgrade no handler between the relay's own and the socket
/// does anything with what they write (``PipelineLayoutError`` pins the layout). One per socket,
/// shared by every handler that writes to it (``RelayWebSocket/configure(_:identity:refusal:services:checkLayout:)``).
///
/// A fan-out writes once per socket per event. A frame written and flushed while NIO holds
/// nothing of this socket goes to the kernel in one `send` from here, without NIO's write path
/// (its pending-writes queue, the channel's lifecycle checks, the socket's own write), about 30 %
/// of a fan-out's CPU. What the kernel does not take, and every frame written while NIO
/// holds any, is handed to NIO, in order: NIO then writes it as the socket drains, counts it
/// against the write buffer's water marks, and fails the channel if the socket failed. A channel
/// without a file descriptor (an `EmbeddedChannel`) is always written through NIO.
///
/// For the heartbeat it also reads, past NIO, what the client sent that waits in the kernel
/// under the socket's low-water mark (``setReceiveLowWater(_:)``, ``receiveWaiting(pongsAlone:)``):
/// pongs, which so wake no one (``HeartbeatHandler``).
///
/// Call every method on the channel's event loop.
final class ChannelOutput {
    private let channel: any Channel
    private let core: any ChannelCore
    /// The socket's descriptor; `-1`: none, or not sent to directly on this platform.
    private let descriptor: CInt
    /// NIO may hold bytes of this socket, flushed or not (it is told when unsure, as at the start,
    /// where the upgrade's answer may still be in its queue): a frame may not overtake them.
    private var nioMayHoldBytes = true
    /// Until ``channelClosed()``: the descriptor is still this socket's.
    private var open = true
    /// Frames sent from here, straight to the kernel (whole or in part).
    private(set) var directSends = 0
    /// Reads from here, past NIO, that brought bytes (``receiveWaiting(pongsAlone:)``).
    private(set) var directReceives = 0

    init(_ channel: any Channel) {
        self.channel = channel
        self.core = channel._channelCore
        #if canImport(Glibc)
        let descriptor = try? channel.pipeline.syncOperations.withUnsafeTransportIfAvailable(of: NIOBSDSocket.Handle.self) { $0 }
        self.descriptor = (descriptor ?? nil) ?? -1
        #else
        self.descriptor = -1
        #endif
    }

    /// Queues `bytes` behind what was written before; they go out with the next flush.
    func write(_ bytes: ByteBuffer) {
        self.nioMayHoldBytes = true
        self.core.write0(NIOAny(bytes), promise: nil)
    }

    /// Hands the socket everything written so far.
    func flush() {
        self.core.flush0()
    }

    /// Writes `bytes` behind everything written before, and flushes it all.
    func writeAndFlush(_ bytes: ByteBuffer) {
        #if canImport(Glibc)
        guard self.descriptor >= 0, self.nioHoldsNothing() else {
            self.write(bytes)
            self.flush()
            return
        }
        self.directSends += 1
        let sent = bytes.withUnsafeReadableBytes { bytes in
            Glibc.send(self.descriptor, bytes.baseAddress, bytes.count, CInt(MSG_NOSIGNAL))
        }
        if sent == bytes.readableBytes { return }
        // The kernel's buffer is full (`EAGAIN`), took a part, or the socket failed: NIO writes
        // the rest when the socket drains, or meets the same failure and closes the channel.
        var rest = bytes
        if sent > 0 { rest.moveReaderIndex(forwardBy: sent) }
        self.write(rest)
        #else
        self.write(bytes)
        #endif
        self.flush()
    }

    /// What ``receiveWaiting(pongsAlone:)`` found.
    enum Received {
        case nothing
        /// Whole pongs of a client (empty, masked), and nothing else.
        case pongs
        case bytes(ByteBuffer)
    }

    /// What the client sent that waits in the kernel, read past NIO without waiting (at most
    /// ``maxBytesReceivedPastNIO``); nothing if nothing waits, the socket is closed, or there is
    /// none. With `pongsAlone` (no frame of the client's is under way), whole pongs and nothing
    /// else are only told, not kept. An end of the stream or an error is left for NIO, which the
    /// kernel tells of it.
    func receiveWaiting(pongsAlone: Bool) -> Received {
        #if canImport(Glibc)
        guard self.descriptor >= 0, self.open else { return .nothing }
        var received: ByteBuffer?
        let onlyPongs = withUnsafeTemporaryAllocation(byteCount: 256, alignment: 1) { chunk -> Bool in
            while (received?.readableBytes ?? 0) < Self.maxBytesReceivedPastNIO {
                let count = Glibc.recv(self.descriptor, chunk.baseAddress, chunk.count, CInt(MSG_DONTWAIT))
                guard count > 0 else { return false }
                let bytes = UnsafeRawBufferPointer(rebasing: chunk[..<count])
                if received == nil {
                    if pongsAlone, count < chunk.count, Self.arePongs(bytes) { return true }
                    received = Self.allocator.buffer(bytes: bytes)
                } else {
                    received!.writeBytes(bytes)
                }
                if count < chunk.count { return false }
            }
            return false
        }
        if onlyPongs {
            self.directReceives += 1
            return .pongs
        }
        guard let received else { return .nothing }
        self.directReceives += 1
        return .bytes(received)
        #else
        return .nothing
        #endif
    }

    /// Whether `bytes` are whole client pongs with no payload (`0x8A 0x80` and a masking key),
    /// one or more, and nothing else.
    static func arePongs(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard !bytes.isEmpty, bytes.count % 6 == 0 else { return false }
        return stride(from: 0, to: bytes.count, by: 6).allSatisfy { bytes[$0] == 0x8A && bytes[$0 + 1] == 0x80 }
    }

    /// Sets the socket's `SO_RCVLOWAT`: the kernel wakes the event loop for the client's bytes
    /// only once this many wait (or the stream ends, or fails). Returns whether it was set.
    @discardableResult
    func setReceiveLowWater(_ bytes: CInt) -> Bool {
        #if canImport(Glibc)
        guard self.descriptor >= 0, self.open else { return false }
        var value = bytes
        return setsockopt(self.descriptor, SOL_SOCKET, SO_RCVLOWAT, &value, socklen_t(MemoryLayout<CInt>.size)) == 0
        #else
        return false
        #endif
    }

    /// Read past NIO at most at once (``receiveWaiting(pongsAlone:)``); what is left wakes NIO.
    static let maxBytesReceivedPastNIO = 4096
    private static let allocator = ByteBufferAllocator()

    /// The channel closed, or a handler that writes here left the pipeline: from now on every
    /// frame goes to NIO (which drops what is written to a closed channel), and nothing is sent
    /// on the descriptor, whose number the next socket the process opens may have. NIO closes
    /// the descriptor and then tells the pipeline's handlers at once, before anything else runs
    /// on the loop; the handlers that write here pass it on as soon as they hear of it.
    func channelClosed() {
        self.open = false
    }

    /// A handler is about to write a frame through the pipeline (to NIO, past this output): what
    /// is written here waits behind it.
    func writingThroughPipeline() {
        self.nioMayHoldBytes = true
    }

    /// The bytes NIO holds for the socket, written or flushed but not yet taken by the kernel
    /// (what counts against the connection's budget: what the kernel took is on its way); 0 once
    /// the channel is closed.
    var heldByNIO: Int {
        (try? self.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
    }

    /// Whether the socket is open and NIO holds none of its bytes, so that a frame sent now comes
    /// after everything written before it.
    private func nioHoldsNothing() -> Bool {
        guard self.open else { return false }
        assert(self.channel.isActive, "a closed channel's output was not told (channelClosed())")
        guard self.nioMayHoldBytes else { return true }
        guard self.heldByNIO == 0 else { return false }
        self.nioMayHoldBytes = false
        return true
    }
}
