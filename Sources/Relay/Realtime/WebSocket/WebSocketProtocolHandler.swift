import NIOCore
import NIOWebSocket

/// RFC 6455 for one upgraded connection, between the frame reader (and the heartbeat) and the
/// relay's connection handler: it refuses what breaks the protocol (with close codes 1002,
/// 1007, 1009), answers pings, reassembles fragmented messages, validates text as UTF-8 and
/// runs the closing handshake. The connection handler sees complete messages only.
///
/// The logic is ``StateMachine``; this handler does the I/O.
///
/// Everything written through it is `ByteBuffer`s holding complete server frames (see
/// ``WebSocketWire``): the pipeline has no frame encoder.
///
/// Events:
/// - inbound, to the connection handler: ``PeerClosed`` when the client began the closing
///   handshake. Nothing the client sends after it is read; the connection handler answers the
///   frames it had before, then sends ``Close``, and this handler echoes the client's close
///   frame (after the close timeout at the latest) and closes the channel;
/// - outbound, from the connection handler: ``Close`` starts the closing handshake;
/// - outbound, toward the head, and inbound, to the connection handler: ``Closing``, just
///   before any close frame is written, so that handlers on either side stop writing (the
///   heartbeat; the connection handler, which writes past this handler).
///
/// When the client ends its side of TCP (`ChannelEvent.inputClosed`, with or without a close
/// frame before it), the channel is closed.
///
/// After a close frame was written (by either side's initiative, or on a protocol failure),
/// every outbound write is dropped and its promise failed with `ChannelError.outputClosed`.
/// Errors other than the frame reader's are passed on unchanged.
final class WebSocketProtocolHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketInboundMessage
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Outbound user event, sent by the connection handler: close the connection with `code`.
    /// The close frame is written once (later requests are ignored); the channel is closed when
    /// the client answers, or after the close timeout.
    struct Close: Sendable, Hashable {
        var code: UInt16
        var reason: String

        init(code: UInt16, reason: String = "") {
            self.code = code
            self.reason = reason
        }
    }

    /// User event passed toward the head and toward the tail just before this handler writes a
    /// close frame (`code` nil: an empty one). No handler may write anything after it.
    struct Closing: Sendable, Hashable {
        var code: UInt16?

        init(code: UInt16? = nil) {
            self.code = code
        }
    }

    /// Inbound user event: the client sent a close frame with `code` (nil: none). The connection
    /// handler answers the client's earlier frames, then sends ``Close`` (its code is not used:
    /// the client's is echoed); the close timeout answers it otherwise.
    struct PeerClosed: Sendable, Hashable {
        var code: UInt16?

        init(code: UInt16? = nil) {
            self.code = code
        }
    }

    private var stateMachine: StateMachine
    private let closeTimeout: TimeAmount
    private let drainTimeout: TimeAmount
    private var closeTimer: Scheduled<Void>?
    /// The socket's output, which the connection and the heartbeat write to past this handler:
    /// told of each frame written through the pipeline, so that none of theirs overtakes it.
    private let output: ChannelOutput?

    /// - Parameters:
    ///   - maxMessageBytes: the largest message accepted, fragments reassembled; a larger one
    ///     fails the connection with 1009.
    ///   - closeTimeout: how long to wait, once a close frame was written, for the client's
    ///     answer before closing the channel anyway.
    ///   - drainTimeout: how long a close frame may wait to be written, behind what the client
    ///     has not read yet (a slow consumer's 4008), before the channel is closed anyway: a
    ///     client that reads again within it gets everything it was owed, then the close frame.
    ///   - output: the socket's output, if other handlers write to it.
    init(
        maxMessageBytes: Int = 64 * 1024,
        closeTimeout: Duration = .seconds(2),
        drainTimeout: Duration = .seconds(60),
        output: ChannelOutput? = nil
    ) {
        self.stateMachine = StateMachine(maxMessageBytes: maxMessageBytes)
        self.closeTimeout = TimeAmount(closeTimeout)
        self.drainTimeout = TimeAmount(drainTimeout)
        self.output = output
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.cancelCloseTimer()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.stateMachine.channelInactive()
        self.cancelCloseTimer()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        switch self.stateMachine.receivedFrame(frame) {
        case .none:
            break
        case .deliver(let message):
            context.fireChannelRead(Self.wrapInboundOut(message))
        case .pong(let payload):
            let pong = WebSocketWire.frame(opcode: .pong, payload: payload, allocator: context.channel.allocator)
            self.output?.writingThroughPipeline()
            context.writeAndFlush(Self.wrapOutboundOut(pong), promise: nil)
        case .peerClosing(let code):
            // The timer first: the connection handler may answer at once, on hearing it.
            self.scheduleCloseTimer(in: self.closeTimeout, context: context)
            context.fireUserInboundEventTriggered(PeerClosed(code: code))
        case .closeChannel:
            self.cancelCloseTimer()
            context.close(promise: nil)
        case .fail(let code, let reason):
            self.writeClose(context: context, code: code, reason: reason, thenClose: true)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        context.fireUserInboundEventTriggered(event)
        // The client ended its side of TCP (the server keeps half-closed connections open, and a
        // client that goes away without a close frame ends that way): nothing more can arrive,
        // not even the answer to a close frame. The connection ends now, not when a later write
        // to it fails (the next heartbeat's ping, up to an interval later).
        if let event = event as? ChannelEvent, event == .inputClosed {
            self.cancelCloseTimer()
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketError {
            switch self.stateMachine.decoderFailed(error) {
            case .none:
                break
            case .fail(let code, let reason):
                self.writeClose(context: context, code: code, reason: reason, thenClose: true)
            case .closeChannel:
                self.cancelCloseTimer()
                context.close(promise: nil)
            }
        } else {
            context.fireErrorCaught(error)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch self.stateMachine.outboundWrite() {
        case .write:
            self.output?.writingThroughPipeline()
            context.write(data, promise: promise)
        case .drop:
            promise?.fail(ChannelError.outputClosed)
        }
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let close = event as? Close else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        switch self.stateMachine.closeRequested(code: close.code, reason: close.reason) {
        case .none:
            promise?.succeed()
        case .sendClose(let code, let reason):
            self.writeClose(context: context, code: code, reason: reason, thenClose: false, promise: promise)
        case .answerClose(let code):
            self.writeClose(context: context, code: code, reason: "", thenClose: true, promise: promise)
        }
    }

    /// Writes and flushes a close frame, after telling the handlers before this one; closes the
    /// channel once it is written (`thenClose`) or if it cannot be. Otherwise the client has the
    /// close timeout to answer it, counted from when it is written, and the frame itself the
    /// drain timeout to get written. A frame that ends the connection at once (an answer to the
    /// client's close, a failure) waits the close timeout only: the client has nothing to get.
    private func writeClose(
        context: ChannelHandlerContext,
        code: UInt16?,
        reason: String,
        thenClose: Bool,
        promise: EventLoopPromise<Void>? = nil
    ) {
        context.triggerUserOutboundEvent(Closing(code: code), promise: nil)
        context.fireUserInboundEventTriggered(Closing(code: code))
        let frame = WebSocketWire.close(code: code, reason: reason, allocator: context.channel.allocator)
        self.output?.writingThroughPipeline()
        let written = context.writeAndFlush(Self.wrapOutboundOut(frame))
        written.assumeIsolated().whenComplete { result in
            if thenClose || (try? result.get()) == nil {
                self.cancelCloseTimer()
                context.close(promise: nil)
            } else {
                self.scheduleCloseTimer(in: self.closeTimeout, context: context)
            }
        }
        if let promise { written.cascade(to: promise) }
        // Written at once (the usual case), the frame already started the close timeout.
        guard self.closeTimer == nil, context.channel.isActive else { return }
        self.scheduleCloseTimer(in: thenClose ? self.closeTimeout : self.drainTimeout, context: context)
    }

    /// Closes the channel in `delay` unless the close handshake ends first; replaces any timer.
    private func scheduleCloseTimer(in delay: TimeAmount, context: ChannelHandlerContext) {
        self.closeTimer?.cancel()
        self.closeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
            self.closeTimer = nil
            switch self.stateMachine.closeTimeoutFired() {
            case .none:
                break
            case .closeChannel:
                context.close(promise: nil)
            case .answerClose(let code):
                self.writeClose(context: context, code: code, reason: "", thenClose: true)
            }
        }
    }

    private func cancelCloseTimer() {
        self.closeTimer?.cancel()
        self.closeTimer = nil
    }
}
