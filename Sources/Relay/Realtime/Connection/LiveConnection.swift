import NIOCore
import Synchronization

/// The handle by which the hub and the relay reach one live connection from any thread: it
/// forwards to the connection's handler on the handler's event loop, and to nothing once the
/// connection has ended.
final class LiveConnection: LiveReceiver, Sendable {
    let loop: any EventLoop
    /// Touched on `loop` only, as every method here ensures (debug builds check it). Not a
    /// `NIOLoopBoundBox`, whose check on every access was 2 % of a relay's CPU in fan-out, where
    /// the hub calls ``receive(_:)`` once per socket per event.
    private nonisolated(unsafe) var handler: LiveConnectionHandler?
    /// The last message of this connection written with its ack: its channel, and its seq.
    /// Every event of that channel up to it has been written too (or comes from a log read that
    /// covers it), so the hub need not hop here with their live copies.
    private let lastOwnEvent = Mutex<(channel: String, seq: Int64)?>(nil)

    /// Call on `eventLoop`.
    init(handler: LiveConnectionHandler, eventLoop: any EventLoop) {
        eventLoop.assertInEventLoop()
        self.loop = eventLoop
        self.handler = handler
    }

    var eventLoop: (any EventLoop)? { self.loop }

    /// From the hub, on the event loop.
    func receive(_ signal: LiveSignal) {
        self.loop.assertInEventLoop()
        self.handler?.receive(signal)
    }

    /// From the hub, on any thread.
    func alreadyHas(channel: String, seq: Int64) -> Bool {
        self.lastOwnEvent.withLock { own in
            guard let own else { return false }
            return own.seq >= seq && own.channel == channel
        }
    }

    /// The handler wrote its own message `seq` of `channel` with the message's ack; on the loop.
    func wroteOwnEvent(channel: String, seq: Int64) {
        self.loop.assertInEventLoop()
        self.lastOwnEvent.withLock { $0 = (channel, seq) }
    }

    /// Closes the connection with `code`; safe from any thread.
    func close(code: UInt16, reason: String) {
        self.loop.execute { self.handler?.close(code: code, reason: reason) }
    }

    /// Lets go of the handler, on the event loop, once the connection has ended.
    func release() {
        self.loop.assertInEventLoop()
        self.handler = nil
    }
}

/// What every live connection of the relay shares.
struct LiveServices: Sendable {
    var store: ChatStore
    var hub: FanoutHub
    var presence: PresenceKeeper
    var connections: LiveConnections
    var heartbeats: Heartbeats
    var limits: RelayLimits
    var metrics: RelayMetrics?
    /// Bytes a connection may be owed before it counts as too slow (4008).
    var maxQueuedBytes: Int
    /// `send` and `read` frames count against their user's writes (`--rate-limit`), with REST's.
    var rateLimiter: RateLimiter? = nil
    /// Events per read of the log.
    var pageSize = 200
}
