import NIOCore
import NIOWebSocket
import Synchronization

/// The WebSocket heartbeat of one connection, on its channel's event loop: pinged every
/// interval, and reported once nothing (no frame at all, pongs included) has been heard from it
/// for two intervals: a ``Silent`` event goes up the pipeline, once.
///
/// It sits right after the frame reader, which tells it of the pongs it keeps from the rest of
/// the pipeline (``heard(at:)``); every frame that reaches this handler goes on. The pings come
/// from its event loop's ``Heartbeats/Wheel``, not from a timer per connection. Once the
/// connection is closing (``WebSocketProtocolHandler/Closing`` passes it on the way out), it
/// pings no more.
///
/// A pong wakes no one. With a ping the socket's low-water mark (`SO_RCVLOWAT`) goes to 7
/// bytes, one more than a client's pong, and the pong is read at the next beat, past NIO
/// (``ChannelOutput/receiveWaiting(pongsAlone:)``): NIO's path for a read was most of an idle
/// connection's CPU. Anything else the client sends is 7 bytes or more, or comes behind the
/// pong, and wakes NIO at once; NIO's first read puts the mark back to 1 byte until the next
/// ping. So only a frame of 6 bytes (an empty payload) that finds nothing waiting waits: for the
/// pong, a round trip, or, from a client that answers no ping, for the next beat. While reads
/// are held, nothing is read here either.
final class HeartbeatHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Nothing was heard from the client for two intervals.
    struct Silent: Sendable {}

    /// Outbound user event, from a handler after this one: it holds back (`true`) or lets go
    /// (`false`) the reading of the client's frames for a reason of the relay's own (answers
    /// waiting on Redis). While reads are held the client cannot be heard, so its silence is
    /// not the client's: nothing is reported until two intervals after they are let go (TCP
    /// holds what the client sends meanwhile).
    struct ReadsHeld: Sendable {
        var held: Bool
    }

    private let heartbeats: Heartbeats
    private var lastHeard = NIODeadline.uptimeNanoseconds(0)
    /// When the last ping went out, since the client was last heard from.
    private var pingedSinceHeard: NIODeadline?
    private var context: ChannelHandlerContext?
    /// Where pings go: the socket's output, past the pipeline (the handlers before this one only
    /// read). Kept until the handler leaves, closing or not: it tells the output of the channel's
    /// close, first of the handlers that write to it.
    private let output: ChannelOutput
    /// The wheel's slot this handler is in, while it is in one.
    fileprivate var slot: Int?
    /// Whether a handler after this one holds back reading the client's frames (``ReadsHeld``).
    private var readsHeld = false
    /// The frame reader before this handler, handed what the heartbeat reads past NIO; set by
    /// the reader as it is given this heartbeat (``WebSocketFrameReader/heartbeat``).
    var reader: WebSocketFrameReader?
    /// Whether the socket's low-water mark keeps a pong from waking the event loop: set with the
    /// ping, and the pong read at the next beat, past NIO (``pongLowWater``).
    private var pongsWaitInKernel = false
    /// Whether no frame of the client's was under way when the mark went up: then bytes that are
    /// whole pongs are pongs, and are only told (no buffer, no trip through the reader).
    private var pongsAlone = false

    /// A ping with no payload, as a server sends it (unmasked).
    private static let ping: ByteBuffer = ByteBuffer(bytes: [0x89, 0x00])

    /// - Parameters:
    ///   - heartbeats: the relay's heartbeats: the interval, and a wheel per event loop.
    ///   - output: the socket's output, shared with the other handlers that write to it.
    init(heartbeats: Heartbeats, output: ChannelOutput) {
        self.heartbeats = heartbeats
        self.output = output
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.lastHeard = context.eventLoop.now
        self.context = context
        if context.channel.isActive {
            self.heartbeats.wheel(on: context.eventLoop).add(self)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.output.channelClosed()
        self.stop(on: context.eventLoop)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Before anything else: the handlers after this one may write as they hear of it.
        self.output.channelClosed()
        self.stop(on: context.eventLoop)
        context.fireChannelInactive()
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        if let event = event as? ReadsHeld {
            if self.readsHeld && !event.held {
                // Heard again from now on: two intervals from here before it counts as silent.
                self.lastHeard = context.eventLoop.now
                self.pingedSinceHeard = nil
            }
            self.readsHeld = event.held
            promise?.succeed()
            return
        }
        if event is WebSocketProtocolHandler.Closing {
            self.stop(on: context.eventLoop)
        }
        context.triggerUserOutboundEvent(event, promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.heard(at: context.eventLoop.now)
        context.fireChannelRead(data)
    }

    /// The client was heard from at `now`: a frame, pongs included.
    func heard(at now: NIODeadline) {
        self.lastHeard = now
        self.pingedSinceHeard = nil
    }

    private func stop(on eventLoop: any EventLoop) {
        if self.slot != nil { self.heartbeats.wheel(on: eventLoop).remove(self) }
        self.context = nil
        self.reader = nil
        // Closing: the client's answer, an empty close frame included, wakes NIO at once.
        self.readThroughNIO()
    }

    /// NIO reads the client's bytes from here on as they come: nothing may wait in the kernel
    /// unseen (a frame of 6 bytes, an empty ping or close, would), until the next ping. Called
    /// by the frame reader on each of NIO's reads, which took whatever waited.
    func readThroughNIO() {
        guard self.pongsWaitInKernel else { return }
        self.pongsWaitInKernel = false
        self.output.setReceiveLowWater(1)
    }

    /// The wheel's turn: pings, or reports the silence.
    /// - Returns: false once the connection is silent (the wheel lets go of it).
    fileprivate func beat(now: NIODeadline, interval: TimeAmount) -> Bool {
        // A handler is in the wheel only while its channel is active: `stop` takes it out.
        guard self.context != nil else { return false }
        // The pong to the last ping, which woke no one (and anything else the client sent with
        // it, under the low-water mark): read here, unless reads are held.
        if self.pongsWaitInKernel, !self.readsHeld {
            switch self.output.receiveWaiting(pongsAlone: self.pongsAlone) {
            case .nothing:
                break
            case .pongs:
                self.heard(at: now)
            case .bytes(let bytes):
                // Anything but whole pongs: the rest of it, or the client's next frame, may be
                // under the mark; NIO reads it as it comes.
                if self.reader?.receivedPastNIO(bytes) != true { self.readThroughNIO() }
            }
        }
        // What the client sent may have closed the channel.
        guard self.context != nil else { return false }
        // Silent: nothing heard for two intervals, although a ping went out at least an interval
        // ago (a loop running late must not close a client it never gave the chance to answer).
        if !self.readsHeld, now - self.lastHeard >= interval * 2, let pinged = self.pingedSinceHeard, now - pinged >= interval {
            self.context?.fireUserInboundEventTriggered(Silent())
            return false
        }
        self.output.writeAndFlush(Self.ping)
        if self.pingedSinceHeard == nil { self.pingedSinceHeard = now }
        if !self.pongsWaitInKernel, !self.readsHeld {
            self.pongsWaitInKernel = self.output.setReceiveLowWater(Self.pongLowWater)
            self.pongsAlone = self.reader?.holdsPartialFrame == false
        }
        return true
    }

    /// The low-water mark set with a ping: a client's pong is 6 bytes (masked, no payload), so
    /// it waits in the kernel; any frame with a payload byte, or a frame after the pong, is 7
    /// or more and wakes the event loop at once, as does the end of the stream.
    static let pongLowWater: CInt = 7
}

/// The relay's heartbeats: the interval, and one timer per event loop for every connection on it.
/// A timer per connection would cost a scheduled-task heap operation per ping, more than the
/// ping itself with thousands of connections.
final class Heartbeats: Sendable {
    let interval: Duration
    private let wheels = Mutex<[ObjectIdentifier: NIOLoopBoundBox<Wheel>]>([:])

    init(interval: Duration) {
        self.interval = interval
    }

    /// The wheel of `eventLoop`; call it on that loop.
    fileprivate func wheel(on eventLoop: any EventLoop) -> Wheel {
        let box = self.wheels.withLock { wheels in
            if let box = wheels[ObjectIdentifier(eventLoop)] { return box }
            let box = NIOLoopBoundBox(Wheel(eventLoop: eventLoop, interval: TimeAmount(self.interval)), eventLoop: eventLoop)
            wheels[ObjectIdentifier(eventLoop)] = box
            return box
        }
        return box.value
    }

    /// The connections of one event loop, spread over slots; each tick serves the next slot, so
    /// that every connection is served once per interval and the pings are spread over it.
    /// Used only on its event loop.
    fileprivate final class Wheel {
        static let slotCount = 8
        private let eventLoop: any EventLoop
        private let interval: TimeAmount
        private var slots = [[ObjectIdentifier: HeartbeatHandler]](repeating: [:], count: Wheel.slotCount)
        private var count = 0
        /// The slot the next tick serves.
        private var current = 0
        private var timer: RepeatedTask?

        init(eventLoop: any EventLoop, interval: TimeAmount) {
            self.eventLoop = eventLoop
            self.interval = interval
        }

        /// Served first a whole interval from now: in the slot that the tick just served.
        func add(_ handler: HeartbeatHandler) {
            let slot = (self.current + Self.slotCount - 1) % Self.slotCount
            self.slots[slot][ObjectIdentifier(handler)] = handler
            handler.slot = slot
            self.count += 1
            if self.timer == nil {
                let step = TimeAmount.nanoseconds(max(1, self.interval.nanoseconds / Int64(Self.slotCount)))
                let wheel = NIOLoopBound(self, eventLoop: self.eventLoop)
                self.timer = self.eventLoop.scheduleRepeatedTask(initialDelay: step, delay: step) { _ in
                    wheel.value.tick()
                }
            }
        }

        func remove(_ handler: HeartbeatHandler) {
            guard let slot = handler.slot else { return }
            handler.slot = nil
            guard self.slots[slot].removeValue(forKey: ObjectIdentifier(handler)) != nil else { return }
            self.count -= 1
            if self.count == 0 {
                // No connection left on this loop: no timer until the next one.
                self.timer?.cancel()
                self.timer = nil
            }
        }

        private func tick() {
            let slot = self.current
            self.current = (self.current + 1) % Self.slotCount
            let now = self.eventLoop.now
            var silent: [HeartbeatHandler] = []
            for handler in self.slots[slot].values where !handler.beat(now: now, interval: self.interval) {
                silent.append(handler)
            }
            for handler in silent { self.remove(handler) }
        }
    }
}
