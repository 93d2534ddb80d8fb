import NIOCore
import NIOWebSocket

/// The first handler of an upgraded WebSocket: makes the client's bytes into `WebSocketFrame`s
/// (``WebSocketFrameParser``), and keeps the pongs, an idle connection's only traffic, from the
/// rest of the pipeline: it tells the heartbeat of each pong itself, and a read of pongs alone
/// goes no further than here, not even its `channelReadComplete`.
///
/// It takes the place of NIO's `ByteToMessageHandler(WebSocketFrameDecoder)`, with the same
/// errors (`NIOWebSocketError`, passed on once, after which the client's bytes are dropped), for
/// what that costs per read: a frame made and passed through two more handlers for every pong.
///
/// Bytes of a frame not whole yet are kept until the rest comes, in a buffer of their size.
///
/// Its heartbeat may read the client's bytes itself, past NIO (``receivedPastNIO(_:)``): they go
/// the same way.
final class WebSocketFrameReader: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = WebSocketFrame

    private let parser: WebSocketFrameParser
    /// The start of a frame whose rest has not arrived.
    private var partial: ByteBuffer?
    /// A frame broke a limit, the channel closed, or the handler was removed: what the client
    /// sends from then on is dropped.
    private var failed = false
    /// Whether a frame went on up the pipeline since the last read completed.
    private var passedFrameOn = false
    /// Told of the pongs that stop here; the pipeline's ``HeartbeatHandler``, once it is in,
    /// which then hands this reader what it reads past NIO.
    var heartbeat: HeartbeatHandler? {
        didSet { self.heartbeat?.reader = self }
    }
    private var context: ChannelHandlerContext?

    /// - Parameter maxFrameSize: the largest payload accepted; a larger frame fails the
    ///   connection (`NIOWebSocketError.invalidFrameLength`, 1009).
    init(maxFrameSize: Int) {
        self.parser = WebSocketFrameParser(maxFrameSize: maxFrameSize)
    }

    /// Whether the start of a frame waits for its rest.
    var holdsPartialFrame: Bool { self.partial != nil }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.failed = true
        self.heartbeat = nil
        self.partial = nil
        self.context = nil
    }

    /// A frame this handler passed on may close the channel in the middle of a read: NIO tells
    /// the handlers at once, and takes them out of the pipeline only a turn of the loop later.
    func channelInactive(context: ChannelHandlerContext) {
        self.failed = true
        self.partial = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.failed else { return }
        self.heartbeat?.readThroughNIO()
        self.process(Self.unwrapInboundIn(data), context: context)
    }

    /// The client's bytes that the heartbeat read from the kernel itself, past NIO (pongs,
    /// which wake no one: ``HeartbeatHandler``), handled as NIO's read of them would be.
    /// - Returns: whether they were whole pongs and nothing else: no frame passed on, and no
    ///   start of one kept.
    func receivedPastNIO(_ bytes: ByteBuffer) -> Bool {
        guard !self.failed, let context = self.context else { return false }
        self.process(bytes, context: context)
        guard self.passedFrameOn else { return self.partial == nil && !self.failed }
        self.passedFrameOn = false
        context.fireChannelReadComplete()
        return false
    }

    private func process(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        var buffer = bytes
        if var partial = self.partial.take() {
            partial.writeBuffer(&buffer)
            buffer = partial
        }
        while true {
            let next: WebSocketFrameParser.Next
            do {
                next = try self.parser.next(from: &buffer)
            } catch {
                self.failed = true
                context.fireErrorCaught(error)
                return
            }
            switch next {
            case .needMoreData:
                if buffer.readableBytes > 0 { self.keep(buffer, context: context) }
                return
            case .pong:
                self.heartbeat?.heard(at: context.eventLoop.now)
            case .frame(let frame):
                self.passedFrameOn = true
                context.fireChannelRead(Self.wrapInboundOut(frame))
                // The frame may have closed the channel: the rest of this read is dropped.
                guard !self.failed else { return }
            }
        }
    }

    /// Passed on only after a frame was. A read that passed nothing on (pongs, the start of a
    /// frame) asks for the next read from here, so that NIO's automatic read does not travel the
    /// pipeline from its tail: the handlers there hold reads back only while the client's frames
    /// wait to be served, and this read brought them none.
    func channelReadComplete(context: ChannelHandlerContext) {
        guard self.passedFrameOn else {
            context.read()
            return
        }
        self.passedFrameOn = false
        context.fireChannelReadComplete()
    }

    /// Keeps the start of a frame until its rest arrives: copied into a buffer of its size,
    /// unless `buffer` is about that already (a frame kept before, grown in place).
    private func keep(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        var buffer = buffer
        if buffer.readerIndex > 0 || buffer.capacity > 2 * buffer.readableBytes + 64 {
            var copy = context.channel.allocator.buffer(capacity: buffer.readableBytes)
            copy.writeBuffer(&buffer)
            buffer = copy
        }
        self.partial = buffer
    }
}
