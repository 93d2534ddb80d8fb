import NIOCore
import NIOWebSocket

/// The WebSocket heartbeat, on the channel's event loop: pings the client every interval and
/// reports a connection from which nothing (no frame at all, pongs included) has been heard for
/// two intervals.
///
/// Pongs stop here: they are the idle connection's only traffic, and passing them on would wake
/// the connection's reader task once per interval for nothing. Every other frame goes on.
/// It sits between the frame decoder and the WebSocket library's handler, in place of the
/// library's auto-ping, which costs each connection a task and two wake-ups per interval.
final class HeartbeatHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let interval: TimeAmount
    private let onSilence: @Sendable () -> Void
    private var lastHeard = NIODeadline.now()
    private var timer: RepeatedTask?

    /// - Parameters:
    ///   - interval: the time between pings.
    ///   - onSilence: called once, on the event loop, when nothing was heard for two intervals.
    init(interval: TimeAmount, onSilence: @escaping @Sendable () -> Void) {
        self.interval = interval
        self.onSilence = onSilence
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.lastHeard = .now()
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        self.timer = context.eventLoop.scheduleRepeatedTask(initialDelay: self.interval, delay: self.interval) { task in
            bound.value.handler.tick(context: bound.value.context, task: task)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.lastHeard = .now()
        let frame = self.unwrapInboundIn(data)
        if frame.opcode == .pong { return }
        context.fireChannelRead(data)
    }

    private func tick(context: ChannelHandlerContext, task: RepeatedTask) {
        guard context.channel.isActive else {
            task.cancel()
            return
        }
        if NIODeadline.now() - self.lastHeard >= self.interval * 2 {
            task.cancel()
            self.timer = nil
            self.onSilence()
            return
        }
        let ping = WebSocketFrame(fin: true, opcode: .ping, data: context.channel.allocator.buffer(capacity: 0))
        context.writeAndFlush(self.wrapOutboundOut(ping), promise: nil)
    }
}
