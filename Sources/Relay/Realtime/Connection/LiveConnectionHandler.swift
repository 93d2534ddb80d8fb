import Foundation
import Logging
import NIOCore
import NIOWebSocket
import RedisClient

/// One live WebSocket, as the last handler of its channel's pipeline: it follows the user's
/// channels, delivers each channel's events in order with no gap, and answers the client's
/// frames. Everything happens on the channel's event loop; Redis I/O runs in a short task whose
/// result comes back to the loop as an input to the ``StateMachine``. An idle connection has no
/// task and no suspended stack.
///
/// Every byte written counts against the connection's outbound budget (`--max-queued-bytes`): a
/// client that lets more pile up is closed with 4008. Reads of the log and answers wait for
/// the socket to drain (`channelWritabilityChanged`), and the client's frames are not read
/// while their answers cannot be written, so a client that never reads is throttled by TCP.
/// While pages of a replay fill the socket, live events wait in the log for the next page
/// instead of in the socket's buffer: the replay's own bytes never make a reading client too
/// slow.
final class LiveConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketInboundMessage
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Who is connected, from the token.
    struct Identity: Sendable {
        var user: String
        var session: String
        var expiresAt: Int64
    }

    let identity: Identity
    let connectionID: String
    private let services: LiveServices
    private var machine: StateMachine
    private var context: ChannelHandlerContext?
    /// Where frames are written and flushed: the socket's output, past the protocol handler and the
    /// heartbeat, neither of which does anything with them (fan-out writes and flushes one socket
    /// per event), and shared with them. In their stead, this handler writes nothing once told
    /// ``WebSocketProtocolHandler/Closing`` (or once it closes): no frame follows a close frame.
    private let output: ChannelOutput
    /// The hub's handle on this connection; set while the handler is in the pipeline.
    private var handle: LiveConnection?
    /// The client sent its close frame: the connection closes once its earlier frames are answered.
    private var peerClosed = false
    /// Channels whose topics this connection is attached to at the hub.
    private var attached: Set<String> = []
    /// A `read` held back while the client's frames wait (back-pressure).
    private var readHeld = false
    /// What the heartbeat was last told of held reads (``tellHeartbeat(context:)``).
    private var toldReadsHeld = false
    private var closing = false
    private var expiry: Scheduled<Void>?
    /// A read of the user's channel set is under way; another is due after it.
    private var refreshing = false
    private var refreshDue = false
    /// Reads of the user's channel set that failed in a row (Redis unreachable).
    private var refreshFailures = 0
    /// When the user's channels, or some of them, could not be read (wall-clock ms, at the `hello`):
    /// each found later starts with its first event made since then, less a second for clocks
    /// apart (``ChatStore/seqs(before:channels:limit:)``).
    private var channelsUnknownSince: Int64?
    /// The start counted this connection in the user's presence; ``finish()`` gives it back.
    private var presenceHeld = false
    /// Per channel, the highest read cursor of the session this socket has shown (`read_ok`):
    /// notices of reads that raced may arrive out of order, and the socket never shows one going
    /// back.
    private var readsShown: [String: Int64] = [:]

    /// - Parameter output: the socket's output, shared with the other handlers that write to it.
    init(identity: Identity, services: LiveServices, output: ChannelOutput) {
        self.identity = identity
        self.output = output
        self.connectionID = Identifier.make(prefix: "w")
        self.services = services
        // A page of the log may fill half the budget: the rest is for live events meanwhile.
        self.machine = StateMachine(user: identity.user, pageSize: services.pageSize, pageBytes: services.maxQueuedBytes / 2)
    }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let handle = LiveConnection(handler: self, eventLoop: context.eventLoop)
        self.handle = handle
        // The socket counts as full at half the budget at most (NIO's default is 64 KiB): what a
        // small budget lets through while the socket takes more leaves room for what comes next.
        let highWaterMark = self.services.maxQueuedBytes / 2
        if highWaterMark < 64 * 1024 {
            let marks = ChannelOptions.Types.WriteBufferWaterMark(low: highWaterMark / 2, high: highWaterMark)
            try? context.channel.syncOptions?.setOption(.writeBufferWaterMark, value: marks)
        }
        _ = self.machine.writabilityChanged(context.channel.isWritable)
        guard self.services.connections.add(handle) else {
            self.close(code: 1001, reason: "server going away")
            return
        }
        let seconds = max(0, self.identity.expiresAt - Clock.seconds())
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.expiry = context.eventLoop.scheduleTask(in: .seconds(min(seconds, Int64(Int32.max)))) {
            loopBound.value.close(code: 4001, reason: "token expired")
        }
        self.start(handle)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.output.channelClosed()
        self.finish()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.output.channelClosed()
        self.finish()
        context.fireChannelInactive()
    }

    /// Lets go of everything the connection holds: its topics, its presence, its place in the
    /// relay's list. Runs once.
    private func finish() {
        guard let handle = self.handle else { return }
        self.handle = nil
        self.closing = true
        self.machine.close()
        self.expiry?.cancel()
        self.services.hub.detach(handle, channels: self.attached, user: self.identity.user)
        self.attached = []
        if self.presenceHeld {
            self.presenceHeld = false
            self.services.presence.disconnected(self.identity.user)
        }
        self.services.connections.remove(handle)
        handle.release()
    }

    /// Reads the user's channels, subscribes to them, anchors each at its log's end, then says hello.
    private func start(_ handle: LiveConnection) {
        let services = self.services
        let user = self.identity.user
        let loopBound = NIOLoopBound(self, eventLoop: handle.loop)
        let eventLoop = handle.loop
        Task {
            let listed = try? await services.store.memberChannels(user: user)
            // Subscribed before the anchors are read: whatever is published after the read comes
            // live or, should the subscription not be up yet, with `mayHaveMissed` from the log.
            await services.hub.attach(handle, channels: listed?.channels ?? [], user: user)
            // The connection's state is keyed by the names its events carry.
            let channels = services.hub.shared(listed?.channels ?? [])
            var found: (seqs: [String: Int64], complete: Bool)?
            if let listed, let anchors = try? await services.store.anchors(channels: channels, user: user) {
                found = (anchors.seqs, listed.complete && anchors.complete)
            }
            let anchors = found
            await services.presence.connected(user)
            eventLoop.execute {
                loopBound.value.started(handle, channels: channels, anchors: anchors?.seqs, complete: anchors?.complete ?? false)
            }
        }
    }

    /// - Parameters:
    ///   - channels: the channels the connection was attached to at the hub.
    ///   - anchors: where each channel the user is a member of starts (nil: none could be read).
    ///   - complete: false if some channels could not be read: they are looked for again later.
    private func started(_ handle: LiveConnection, channels: [String], anchors: [String: Int64]?, complete: Bool) {
        guard !self.closing, self.handle != nil else {
            // Ended while starting: what the start took (topics, presence) is given back here,
            // since ``finish()`` ran before it was taken.
            self.services.hub.detach(handle, channels: channels, user: self.identity.user)
            self.services.presence.disconnected(self.identity.user)
            return
        }
        self.presenceHeld = true
        self.attached.formUnion(channels)
        // Left before its anchor was read: its member_left came before this connection started.
        if let anchors { self.leave(channels.filter { anchors[$0] == nil }) }
        let outcome = self.machine.started(anchors: anchors)
        self.write(
            .hello(
                user: self.identity.user,
                session: self.identity.session,
                connection: self.connectionID,
                heartbeatMilliseconds: self.services.heartbeats.interval.wholeMilliseconds
            )
        )
        if anchors == nil || !complete {
            self.channelsUnknownSince = Int64(Clock.milliseconds())
            self.refreshAfterFailure()
        }
        self.apply(outcome)
        self.serveFrames()
        self.flush()
    }

    /// Closes with `code` (1001, 4001, 4008): the protocol handler sends the close frame and
    /// ends the connection. The first request wins.
    func close(code: UInt16, reason: String) {
        guard !self.closing, let context = self.context else { return }
        self.closing = true
        self.machine.close()
        self.expiry?.cancel()
        context.triggerUserOutboundEvent(WebSocketProtocolHandler.Close(code: code, reason: reason), promise: nil)
        self.readIfHeld()
    }

    // MARK: From the hub

    func receive(_ signal: LiveSignal) {
        guard !self.closing else { return }
        switch signal {
        case .event(let channel, let seq, let frame):
            switch self.machine.liveEvent(channel: channel, seq: seq, frame: frame.wire, membership: frame.membership) {
            case .none:
                return
            case .write(let wire):
                // The fan-out's one write per socket per event: written and flushed in one pass.
                self.writeWire(wire, flush: true)
                return
            case .writeAndLeave(let wire, let channel):
                self.writeWire(wire)
                self.leave([channel])
            case .writeAndRead(let wire, let read):
                self.writeWire(wire)
                self.startRead(read)
            case .read(let read):
                // Nothing written: nothing to flush.
                self.startRead(read)
                return
            case .tooSlow:
                self.services.metrics?.slowConsumerClosed()
                self.close(code: 4008, reason: "slow consumer: resume from your cursor")
                return
            }
        case .mayHaveMissed(let channel):
            if let read = self.machine.mayHaveMissed(channel: channel) { self.startRead(read) }
        case .channelsChanged:
            // Redis answers again (a resubscription says so) or something changed: retries after
            // a failure start again from a second.
            self.refreshFailures = 0
            self.refreshChannels()
        case .joined(let channel, let seq):
            self.apply(self.machine.joined(channel: channel, seq: seq))
        case .read(let connection, let session, let channel, let seq):
            // Another socket (or REST) of this session moved its cursor: this one shows it too.
            guard session == self.identity.session, connection != self.connectionID,
                seq > self.readsShown[channel, default: 0]
            else { return }
            self.readsShown[channel] = seq
            self.write(.readOK(channel: channel, lastReadSeq: seq))
        }
        self.flush()
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.closing else { return }
        let message = self.unwrapInboundIn(data)
        guard self.machine.frameReceived(message, maxBytes: self.services.maxQueuedBytes) else {
            self.services.metrics?.slowConsumerClosed()
            self.close(code: 4008, reason: "slow consumer: too many frames unanswered")
            return
        }
        self.serveFrames()
        self.flush()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let outcome = self.machine.writabilityChanged(context.channel.isWritable)
        self.apply(outcome)
        self.serveFrames()
        self.flush()
        self.tellHeartbeat(context: context)
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is WebSocketProtocolHandler.PeerClosed:
            // Frames that came before the client's close frame are answered first, in order.
            self.peerClosed = true
            self.closeOnceAnswered()
        case is WebSocketProtocolHandler.Closing:
            self.closing = true
            self.machine.close()
            self.readIfHeld()
        case is HeartbeatHandler.Silent:
            self.close(code: 1001, reason: "no frame for two heartbeats")
        case is ChannelShouldQuiesceEvent:
            self.close(code: 1001, reason: "server going away")
        default:
            break
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: Outbound

    func read(context: ChannelHandlerContext) {
        if self.machine.wantsInput || self.closing {
            self.holdReads(false, context: context)
            context.read()
        } else {
            self.holdReads(true, context: context)
        }
    }

    /// Asks for more of the client's frames if a read was held back and they are wanted now, or
    /// the connection is closing (what still comes is dropped, so that the socket is not closed
    /// with unread bytes, which would reset it and lose the close frame on the client's side).
    private func readIfHeld() {
        guard self.readHeld, self.machine.wantsInput || self.closing, let context = self.context else { return }
        self.holdReads(false, context: context)
        context.read()
    }

    /// Notes that reads are held back, or no longer.
    private func holdReads(_ held: Bool, context: ChannelHandlerContext) {
        guard self.readHeld != held else { return }
        self.readHeld = held
        self.tellHeartbeat(context: context)
    }

    /// Tells the heartbeat whether reads are held while the socket takes what is written: the
    /// relay is behind (answers waiting on Redis), and a client that cannot be heard is not
    /// silent for that. Reads held because the client does not read are its own doing: its
    /// silence counts, so that a peer gone for good is still found.
    private func tellHeartbeat(context: ChannelHandlerContext) {
        let held = self.readHeld && self.machine.isWritable
        guard held != self.toldReadsHeld else { return }
        self.toldReadsHeld = held
        context.triggerUserOutboundEvent(HeartbeatHandler.ReadsHeld(held: held), promise: nil)
    }

    private func write(_ message: ServerMessage) {
        self.writeWire(message.frame)
    }

    /// Writes a whole frame, within the budget: past it the client is too slow, and is closed.
    /// With `flush`, everything written so far goes out with it.
    private func writeWire(_ wire: ByteBuffer, flush: Bool = false) {
        // Out of the pipeline: nothing more to write.
        guard !self.closing, self.context != nil else { return }
        // The machine's flag follows channelWritabilityChanged: cheaper than asking the channel.
        if !self.machine.isWritable {
            if self.output.heldByNIO + wire.readableBytes > self.services.maxQueuedBytes {
                self.services.metrics?.slowConsumerClosed()
                self.close(code: 4008, reason: "slow consumer: resume from your cursor")
                return
            }
        }
        if flush {
            self.output.writeAndFlush(wire)
        } else {
            self.output.write(wire)
        }
    }

    private func flush() {
        self.output.flush()
    }

    // MARK: Plans

    /// Carries out what the machine decided: frames, channels left, log reads, an answer.
    private func apply(_ outcome: StateMachine.Outcome) {
        guard !outcome.isEmpty else { return }
        for frame in outcome.frames { self.writeWire(frame) }
        if !outcome.left.isEmpty { self.leave(outcome.left) }
        for read in outcome.reads { self.startRead(read) }
        if let answer = outcome.answer {
            self.write(answer)
            self.machine.frameServed()
            self.serveFrames()
        }
        if outcome.fellBehind {
            self.services.metrics?.slowConsumerClosed()
            self.close(code: 4008, reason: "events trimmed before delivery: resume from your cursor")
        }
    }

    /// Stops following channels the user left (after writing its own `member_left`).
    private func leave(_ channels: [String]) {
        guard let handle = self.handle else { return }
        let left = channels.filter { self.attached.remove($0) != nil }
        if !left.isEmpty { self.services.hub.detach(handle, channels: left) }
    }

    /// Reads a page of the log; subscribes first to a channel not followed before, and reads its
    /// end again once the subscription is confirmed (what was published in between).
    private func startRead(_ read: StateMachine.LogRead) {
        guard let handle = self.handle else { return }
        let services = self.services
        let loopBound = NIOLoopBound(self, eventLoop: handle.loop)
        let eventLoop = handle.loop
        if self.attached.insert(read.channel).inserted {
            Task {
                let confirmed = await services.hub.attach(handle, channels: [read.channel])
                eventLoop.execute {
                    let handler = loopBound.value
                    guard handler.handle != nil else {
                        // Ended meanwhile: ``finish()`` detached before this attached.
                        services.hub.detach(handle, channels: [read.channel])
                        return
                    }
                    if confirmed { handler.receive(LiveSignal.mayHaveMissed(channel: read.channel)) }
                }
            }
        }
        // A page comes back to the loop as an input; a task reads it only when no connection
        // to Redis is up yet.
        if let page = services.store.logEventsImmediately(channel: read.channel, after: read.after, limit: read.limit, on: eventLoop) {
            page.whenComplete { result in loopBound.value.logRead(read, page: try? result.get()) }
            return
        }
        Task {
            let page = try? await services.store.logEvents(channel: read.channel, after: read.after, limit: read.limit)
            eventLoop.execute { loopBound.value.logRead(read, page: page) }
        }
    }

    private func logRead(_ read: StateMachine.LogRead, page: [StateMachine.LogEvent]?) {
        if let page {
            // Pages of several channels may land together: each writes what room is left.
            self.apply(self.machine.logPage(read, events: page, buffered: self.output.heldByNIO))
        } else {
            self.apply(self.machine.logReadFailed(read))
        }
        self.flush()
    }

    /// Reads the user's channel set again and follows the channels not followed yet, each from
    /// the user's own `member_joined` (or, when the channels could not be read at connect, from
    /// the first event made since the `hello`). On failure, again later (``refreshAfterFailure()``).
    private func refreshChannels(after delay: TimeAmount? = nil) {
        guard let handle = self.handle else { return }
        if let delay {
            let loopBound = NIOLoopBound(self, eventLoop: handle.loop)
            handle.loop.scheduleTask(in: delay) { loopBound.value.refreshChannels() }
            return
        }
        guard !self.refreshing else {
            self.refreshDue = true
            return
        }
        self.refreshing = true
        let services = self.services
        let user = self.identity.user
        let following = self.machine.following
        let unknownSince = self.channelsUnknownSince
        let loopBound = NIOLoopBound(self, eventLoop: handle.loop)
        let eventLoop = handle.loop
        Task {
            var starts: [String: Int64]?
            var complete = false
            do {
                let listed = try await services.store.memberChannels(user: user)
                complete = listed.complete
                let new = Set(listed.channels).subtracting(following).sorted()
                var found: [String: Int64] = [:]
                if let unknownSince {
                    found = try await services.store.seqs(before: unknownSince - 1000, channels: new)
                } else {
                    for channel in new {
                        found[channel] = try await services.store.joinSeq(channel: channel, user: user) - 1
                    }
                }
                starts = found
            } catch {
                starts = nil
            }
            eventLoop.execute { [starts, complete] in loopBound.value.refreshed(starts, complete: complete) }
        }
    }

    /// Reads the user's channel set again after a failure: a second later, then twice as long
    /// after each failure in a row, up to 30 s, with up to a tenth more at random. So a relay's
    /// sockets do not all ask an unreachable Redis every second (10,000 of them took a fifth of
    /// a core doing so); once it is back, the hub's resubscription tells each socket to read at
    /// once (`channelsChanged`).
    private func refreshAfterFailure() {
        let delay = TimeAmount.seconds(min(30, 1 << min(self.refreshFailures, 5)))
        self.refreshFailures += 1
        let jitter = TimeAmount.nanoseconds(Int64.random(in: 0...(delay.nanoseconds / 10)))
        self.refreshChannels(after: delay + jitter)
    }

    /// - Parameter complete: false if some channels could not be checked: those found are
    ///   followed, and the rest looked for again later, as after a failure.
    private func refreshed(_ starts: [String: Int64]?, complete: Bool) {
        self.refreshing = false
        guard !self.closing else { return }
        guard let starts else {
            self.refreshAfterFailure()
            return
        }
        // Found since the hello when the channels were unknown, otherwise at the user's join.
        let atJoin = self.channelsUnknownSince == nil
        self.apply(self.machine.found(channels: starts, atJoin: atJoin))
        self.flush()
        guard complete else {
            self.refreshAfterFailure()
            return
        }
        self.refreshFailures = 0
        self.channelsUnknownSince = nil
        if self.refreshDue {
            self.refreshDue = false
            self.refreshChannels()
        }
    }

    // MARK: Client frames

    /// Serves the client's frames in order while the socket takes more; one that needs Redis
    /// continues when its answer comes back.
    private func serveFrames() {
        while !self.closing, let message = self.machine.nextFrame() {
            self.serve(message)
        }
        self.readIfHeld()
        self.closeOnceAnswered()
    }

    /// After the client's close frame: once every frame it sent before is answered, the closing
    /// handshake goes on (the protocol handler echoes the client's close frame).
    private func closeOnceAnswered() {
        guard self.peerClosed, !self.closing, !self.machine.hasFramesToAnswer else { return }
        self.close(code: WebSocketWire.CloseCode.normalClosure, reason: "")
    }

    private func serve(_ message: WebSocketInboundMessage) {
        let payload: ByteBuffer
        switch message {
        case .binary:
            self.answer(.error(code: .badRequest, message: "binary frames are not understood"))
            return
        case .text(let text):
            payload = text
        }
        let frame: ClientFrame
        switch ClientFrame.parse(payload, limits: self.services.limits) {
        case .rejected(let error):
            self.answer(error)
            return
        case .frame(let parsed):
            frame = parsed
        }
        switch frame {
        case .ping:
            self.answer(.pong)
        case .send(let channel, let clientMessageID, let text):
            let store = self.services.store
            let user = self.identity.user
            if let refusal = self.rateLimited() {
                self.answer(.error(code: refusal.code, message: refusal.message, channel: channel, clientMessageID: clientMessageID))
                return
            }
            /// The ack, and the event itself when it is new (for ``answered(_:ownEvent:)``).
            @Sendable func answer(_ result: Result<(created: Bool, event: String), any Error>) -> (ServerMessage, OwnEvent?) {
                switch result {
                case .success((let created, let event)):
                    let seq = EventJSON.field(.seq, in: event).flatMap { Int64($0) } ?? 0
                    let ack = ServerMessage.ack(
                        clientMessageID: clientMessageID,
                        channel: channel,
                        seq: seq,
                        messageID: EventJSON.field(.messageID, in: event) ?? ""
                    )
                    return (ack, created ? OwnEvent(channel: channel, seq: seq, json: event) : nil)
                case .failure(let error):
                    let apiError = APIError(from: error)
                    return (.error(code: apiError.code, message: apiError.message, channel: channel, clientMessageID: clientMessageID), nil)
                }
            }
            self.answer(
                now: { loop, then in
                    store.sendImmediately(
                        channel: channel,
                        sender: user,
                        clientMessageID: clientMessageID,
                        text: text,
                        on: loop,
                        then: then
                    )
                },
                later: { try await store.send(channel: channel, sender: user, clientMessageID: clientMessageID, text: text) },
                with: answer
            )
        case .read(let channel, let seq):
            let store = self.services.store
            let user = self.identity.user
            let session = self.identity.session
            if let refusal = self.rateLimited() {
                self.answer(.error(code: refusal.code, message: refusal.message, channel: channel))
                return
            }
            let connection = self.connectionID
            @Sendable func answer(_ result: Result<Int64, any Error>) -> ServerMessage {
                switch result {
                case .success(let last):
                    return .readOK(channel: channel, lastReadSeq: last)
                case .failure(let error):
                    let apiError = APIError(from: error)
                    return .error(code: apiError.code, message: apiError.message, channel: channel)
                }
            }
            self.answer(
                now: { loop, then in
                    store.markReadImmediately(
                        channel: channel,
                        user: user,
                        session: session,
                        seq: seq,
                        connection: connection,
                        on: loop,
                        then: then
                    )
                },
                later: { try await store.markRead(channel: channel, user: user, session: session, seq: seq, connection: connection) },
                with: { (answer($0), nil) }
            )
        case .resume(let cursors, let invalid):
            for error in invalid { self.write(error) }
            self.resume(cursors)
        }
    }

    /// The refusal of a write frame over its user's rate limit, if it is (``RateLimiter``).
    private func rateLimited() -> APIError? {
        guard let limiter = self.services.rateLimiter, let seconds = limiter.take(self.identity.user) else { return nil }
        return limiter.refusal(retryAfter: seconds)
    }

    /// Writes the answer to the frame being served (followed, in the same buffer, by `event`'s
    /// frame, when given) and goes on with the next.
    private func answer(_ message: ServerMessage, followedBy event: String? = nil) {
        self.writeWire(event.map(message.frame(followedBy:)) ?? message.frame)
        self.machine.frameServed()
    }

    /// Answers the frame being served with what `answer` makes of an operation's result: the
    /// operation sent from this loop (`now`, given the loop and the callback for its result:
    /// its reply comes back here, with no task in between), or, when it could not go out at
    /// once (`now` answered false: no connection to its node yet, replicas to wait for), `later`
    /// run in a task (which passes on no own event).
    private func answer<Value: Sendable>(
        now: (any EventLoop, @escaping @Sendable (Result<Value, any Error>) -> Void) -> Bool,
        later: @escaping @Sendable () async throws -> Value,
        with answer: @escaping @Sendable (Result<Value, any Error>) -> (ServerMessage, OwnEvent?)
    ) {
        if let handle = self.handle {
            let loopBound = NIOLoopBound(self, eventLoop: handle.loop)
            let sent = now(handle.loop) { result in
                let (message, event) = answer(result)
                loopBound.value.answered(message, ownEvent: event)
            }
            if sent { return }
        }
        self.answerLater {
            do {
                return answer(.success(try await later())).0
            } catch {
                return answer(.failure(error)).0
            }
        }
    }

    /// Answers the frame being served once `body` has run (off the event loop).
    private func answerLater(_ body: @escaping @Sendable () async -> ServerMessage) {
        guard let handle = self.handle else { return }
        let loopBound = NIOLoopBound(self, eventLoop: handle.loop)
        let eventLoop = handle.loop
        Task {
            let message = await body()
            eventLoop.execute { loopBound.value.answered(message) }
        }
    }

    /// A message this connection sent, as logged.
    struct OwnEvent: Sendable {
        var channel: String
        var seq: Int64
        var json: String
    }

    /// On the loop: the answer to the frame being served is ready; the next frames follow. A
    /// message the connection just sent goes out right after its ack, in the same buffer, when
    /// it continues the channel's stream (``StateMachine/ownEvent(channel:seq:)``).
    private func answered(_ message: ServerMessage, ownEvent event: OwnEvent? = nil) {
        guard !self.closing else { return }
        var message = message
        if case .readOK(let channel, let last) = message {
            // A notice of a later read may have shown more already: the cursor is at least that.
            let shown = max(last, self.readsShown[channel, default: 0])
            self.readsShown[channel] = shown
            message = .readOK(channel: channel, lastReadSeq: shown)
        }
        let ownEvent = event.flatMap { self.machine.ownEvent(channel: $0.channel, seq: $0.seq) ? $0 : nil }
        self.answer(message, followedBy: ownEvent?.json)
        if let ownEvent { self.handle?.wroteOwnEvent(channel: ownEvent.channel, seq: ownEvent.seq) }
        self.serveFrames()
        self.flush()
    }

    /// Asks Redis about every channel named (membership, log ends), then replays each from its
    /// cursor; `resumed` follows once every replay reached the log's end.
    private func resume(_ cursors: [(channel: String, cursor: Int64)]) {
        guard let handle = self.handle else { return }
        let store = self.services.store
        let user = self.identity.user
        let loopBound = NIOLoopBound(self, eventLoop: handle.loop)
        let eventLoop = handle.loop
        let channels = cursors.map(\.channel)
        Task {
            let lookups = (try? await store.resumeLookups(channels: channels, user: user)) ?? [:]
            eventLoop.execute { loopBound.value.resumeLookedUp(cursors, lookups) }
        }
    }

    private func resumeLookedUp(_ cursors: [(channel: String, cursor: Int64)], _ lookups: [String: StateMachine.ResumeLookup]) {
        guard !self.closing else { return }
        let (errors, outcome) = self.machine.resumeLookedUp(cursors: cursors, lookups: lookups)
        for error in errors { self.write(error) }
        self.apply(outcome)
        self.flush()
    }
}
