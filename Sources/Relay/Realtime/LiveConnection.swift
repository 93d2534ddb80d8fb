import Foundation
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import RedisClient
import Synchronization

/// One WebSocket: follows its user's channels and delivers each channel's events in order with
/// no gap, fills gaps from the log, and answers the client's frames.
///
/// Two paths write events, both on the channel's event loop, where each decides and writes under
/// the connection's lock, so the order on the wire is the order of the decisions:
/// - the fast path: the hub calls ``receive(_:)`` on the event loop with a live event; if it is
///   the channel's next seq and nothing of that channel waits on the slow path, its frame (the
///   same bytes for every connection) is written at once;
/// - the slow path: anything else (a gap, a socket that is not writable, a resume, a channel
///   joined, a subscription that was lost) goes to the connection's task, in the order it
///   arrived, together with the client's frames. The task fills gaps from the log and writes in
///   seq order; while it owns a channel, that channel's live events queue behind it.
///
/// The slow path's queue is bounded: a client too slow to take what it is sent is closed with 4008.
final class LiveConnection: LiveReceiver, Sendable {
    enum Input: Sendable {
        case signal(LiveSignal)
        case frame(WebSocketMessage)
    }

    /// What the connection knows of one channel it follows.
    struct Stream {
        /// The last seq written; `nil` until the first event (then live from there).
        var delivered: Int64?
        /// Live events of this channel waiting in the inbox: the fast path waits for them.
        var queued = 0
        /// The task is filling this channel from the log: the fast path waits for it.
        var filling = false
    }

    struct State {
        var streams: [String: Stream] = [:]
        /// Inputs in the inbox (signals and frames).
        var queued = 0
        /// Set once the connection is to be closed: the close code and reason to send.
        var closing: (code: UInt16, reason: String)?
        /// False until the hello is written: events that arrive earlier wait in the inbox.
        var started = false
        /// False while the user's channels could not be read (Redis was unreachable at connect).
        var channelsKnown = true
    }

    let user: String
    let session: String
    let id: String
    let channel: any Channel
    var eventLoop: (any EventLoop)? { self.channel.eventLoop }
    private let store: ChatStore
    private let hub: FanoutHub
    private let presence: PresenceKeeper
    private let messages: MessageRoutes
    private let maxQueued: Int
    private let inbox: AsyncStream<Input>.Continuation
    private let inputs: AsyncStream<Input>
    private let state = Mutex(State())
    /// The WebSocket frame encoder's context, found on first use: pre-encoded frames are
    /// written from there, past the encoder. Only touched on the event loop.
    private let encoderContext: NIOLoopBoundBox<ChannelHandlerContext?>

    static let replayPage = 200

    init(
        user: String,
        session: String,
        channel: any Channel,
        store: ChatStore,
        hub: FanoutHub,
        presence: PresenceKeeper,
        messages: MessageRoutes,
        maxQueued: Int
    ) {
        self.user = user
        self.session = session
        self.id = Identifier.make(prefix: "w")
        self.channel = channel
        self.encoderContext = .makeEmptyBox(valueType: ChannelHandlerContext.self, eventLoop: channel.eventLoop)
        self.store = store
        self.hub = hub
        self.presence = presence
        self.messages = messages
        self.maxQueued = maxQueued
        (self.inputs, self.inbox) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    /// The channels this connection follows.
    var following: Set<String> {
        self.state.withLock { Set($0.streams.keys) }
    }

    // MARK: Fast path (the channel's event loop)

    /// From the hub, on the channel's event loop: writes an in-order live event at once, queues
    /// everything else for the connection's task. Never blocks.
    func receive(_ signal: LiveSignal) {
        guard self.channel.eventLoop.inEventLoop else {
            self.channel.eventLoop.execute { self.receive(signal) }
            return
        }
        enum Action {
            case write(LiveFrame)
            case enqueue, overflow, drop
        }
        let action: Action = self.state.withLock { state in
            guard state.closing == nil else { return .drop }
            if case .event(let channel, let seq, let frame) = signal {
                guard var stream = state.streams[channel] else { return .drop }
                if state.started, stream.queued == 0, !stream.filling, self.channel.isWritable {
                    if let last = stream.delivered, seq <= last { return .drop }
                    if stream.delivered == nil || stream.delivered == seq - 1 {
                        stream.delivered = seq
                        state.streams[channel] = stream
                        return .write(frame)
                    }
                }
                guard state.queued < self.maxQueued else { return .overflow }
                stream.queued += 1
                state.streams[channel] = stream
            } else if state.queued >= self.maxQueued {
                return .overflow
            }
            state.queued += 1
            return .enqueue
        }
        switch action {
        case .write(let frame):
            self.writeWire(frame)
        case .enqueue:
            self.inbox.yield(.signal(signal))
        case .overflow:
            self.requestClose(code: 4008, reason: "slow consumer: resume from your cursor")
        case .drop:
            break
        }
    }

    /// On the event loop: writes an event's pre-encoded frame straight to the socket's side of
    /// the WebSocket encoder, or, should the encoder not be found, the frame through it.
    private func writeWire(_ frame: LiveFrame) {
        if self.encoderContext.value == nil {
            self.encoderContext.value = try? self.channel.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
        }
        if let context = self.encoderContext.value {
            context.writeAndFlush(NIOAny(frame.wire), promise: nil)
        } else {
            self.channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, data: frame.json), promise: nil)
        }
    }

    // MARK: Running

    /// Serves the socket until the client leaves, the server stops, or the client falls behind.
    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, heartbeats: Heartbeats, expiresAt: Int64) async {
        await self.startHeartbeat(heartbeats)
        // Subscribed before the hello, so that every event published after it reaches the
        // client; queued until the hello is out, so that the hello comes first.
        let channels = try? await self.store.memberChannels(user: self.user)
        self.state.withLock { state in
            state.channelsKnown = channels != nil
            for channel in channels ?? [] { state.streams[channel] = Stream() }
        }
        await self.hub.attach(self, channels: channels ?? [], user: self.user)
        if let channels {
            // Each stream starts at its log's end as of now, once subscribed: what is published
            // later comes live or, should the subscription not be up yet or be lost before the
            // first event, from the log (the `mayHaveMissed` that follows fills from there).
            await self.anchorAtLogEnd(channels)
        } else {
            self.refreshChannelsSoon()
        }
        await self.presence.connected(self.user)
        let hello =
            "{\"type\":\"hello\",\"user_id\":\"\(self.user)\",\"session_id\":\"\(self.session)\",\"connection_id\":\"\(self.id)\""
            + ",\"heartbeat_ms\":\(heartbeats.interval.wholeMilliseconds)}"
        try? await self.write(hello)
        self.state.withLock { $0.started = true }

        let expiry = self.channel.eventLoop.scheduleTask(in: .seconds(max(0, expiresAt - Clock.seconds()))) {
            self.requestClose(code: 4001, reason: "token expired")
        }
        await self.serve(inbound: inbound)
        expiry.cancel()
        self.inbox.finish()
        self.hub.detach(self, channels: self.following, user: self.user)
        self.presence.disconnected(self.user)
        if let (code, reason) = self.state.withLock({ $0.closing }) {
            // Through the WebSocket library, so that it knows the connection is closing and does
            // not answer the client's echo with a second close frame (which browsers reject).
            try? await outbound.close(.unknown(code), reason: reason)
        }
    }

    /// Pings from the event loop (``HeartbeatHandler``), after the frame decoder; a connection
    /// silent for two intervals is closed with 1001.
    private func startHeartbeat(_ heartbeats: Heartbeats) async {
        let channel = self.channel
        try? await channel.eventLoop.submit {
            let heartbeat = HeartbeatHandler(heartbeats: heartbeats) { [weak self] in
                self?.requestClose(code: 1001, reason: "no pong for two heartbeats")
            }
            let pipeline = channel.pipeline.syncOperations
            let decoder = try pipeline.handler(type: ByteToMessageHandler<WebSocketFrameDecoder>.self)
            try pipeline.addHandler(heartbeat, position: .after(decoder))
        }.get()
    }

    /// Closes the connection with `code` (4001, 4008, 1001) once its task has stopped, at the
    /// latest two seconds from now; the first request wins. Safe from any thread.
    func requestClose(code: UInt16, reason: String) {
        let first = self.state.withLock { state in
            guard state.closing == nil else { return false }
            state.closing = (code, reason)
            return true
        }
        guard first else { return }
        self.inbox.finish()
        // A client that does not read never lets the close frame out: cut it off regardless.
        let channel = self.channel
        channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
    }

    private var isClosing: Bool {
        self.state.withLock { $0.closing != nil }
    }

    /// Reads frames and processes the inbox until either ends.
    private func serve(inbound: WebSocketInboundStream) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await message in inbound.messages(maxSize: self.store.limits.maxBodyBytes) {
                        self.enqueue(.frame(message))
                    }
                } catch {}
            }
            group.addTask {
                for await input in self.inputs {
                    do {
                        try await self.process(input)
                    } catch is CancellationError {
                        break
                    } catch {
                        // A write to a closed socket: the reader notices the close too.
                        if !(error is RedisError) && !(error is APIError) { break }
                    }
                    self.state.withLock { state in
                        state.queued -= 1
                        if case .signal(.event(let channel, _, _)) = input { state.streams[channel]?.queued -= 1 }
                    }
                    if !self.channel.isActive || self.isClosing { break }
                }
            }
            await group.next()
            self.inbox.finish()
            group.cancelAll()
        }
    }

    /// Queues a client frame behind whatever the task has to do first.
    private func enqueue(_ input: Input) {
        enum Action { case enqueue, overflow, drop }
        let action: Action = self.state.withLock { state in
            guard state.closing == nil else { return .drop }
            guard state.queued < self.maxQueued else { return .overflow }
            state.queued += 1
            return .enqueue
        }
        switch action {
        case .enqueue: self.inbox.yield(input)
        case .overflow: self.requestClose(code: 4008, reason: "slow consumer: resume from your cursor")
        case .drop: break
        }
    }

    // MARK: Slow path (the connection's task)

    private func process(_ input: Input) async throws {
        switch input {
        case .signal(.event(let channel, let seq, let frame)):
            guard let last = self.state.withLock({ $0.streams[channel] })?.delivered else {
                // Not followed (any more), or live from this first event on.
                try await self.writeInOrder(channel, [(seq, frame.json)], startingLive: true)
                return
            }
            if seq > last + 1 {
                try await self.fill(channel, through: seq - 1)
            }
            try await self.writeInOrder(channel, [(seq, frame.json)])
        case .signal(.mayHaveMissed(let channel)):
            guard self.state.withLock({ $0.streams[channel]?.delivered }) != nil else { return }
            try await self.fill(channel, through: nil)
        case .signal(.channelsChanged):
            do {
                try await self.refreshChannels()
            } catch {
                self.refreshChannelsSoon()
                throw error
            }
        case .frame(.text(let text)):
            try await self.handle(text: text)
        case .frame(.binary):
            try await self.write("{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"binary frames are not understood\"}")
        }
    }

    /// On the event loop, writes those of `events` (ascending) that continue the channel's
    /// delivered seq, skipping any at or below it and stopping at a gap; then waits, if the
    /// socket is not writable, until it is (the client reads) or the connection ends.
    ///
    /// - Parameter startingLive: a channel with nothing delivered yet starts at the first event.
    private func writeInOrder(_ channel: String, _ events: [(seq: Int64, frame: ByteBuffer)], startingLive: Bool = false) async throws {
        try await self.channel.eventLoop.submit {
            let frames: [ByteBuffer] = self.state.withLock { state in
                guard var stream = state.streams[channel] else { return [] }
                var frames: [ByteBuffer] = []
                for (seq, frame) in events {
                    if stream.delivered == nil && !startingLive { break }
                    if let last = stream.delivered {
                        if seq <= last { continue }
                        if seq > last + 1 { break }
                    }
                    stream.delivered = seq
                    frames.append(frame)
                }
                state.streams[channel] = stream
                return frames
            }
            for frame in frames {
                self.channel.write(WebSocketFrame(fin: true, opcode: .text, data: frame), promise: nil)
            }
            if !frames.isEmpty { self.channel.flush() }
        }.get()
        try await self.waitUntilWritable()
    }

    /// Backpressure for the slow path: a replay never piles up more than the socket's buffer.
    private func waitUntilWritable() async throws {
        while !self.channel.isWritable && self.channel.isActive && !self.isClosing {
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Writes one text frame (an answer) after everything written before it.
    private func write(_ text: String) async throws {
        try await self.channel.eventLoop.submit {
            self.channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: text)), promise: nil)
        }.get()
    }

    /// Delivers the log's events after the last delivered one, up to `target` (or to the end).
    /// Meanwhile the channel's live events wait in the inbox, behind this.
    private func fill(_ channel: String, through target: Int64?, from cursor: Int64? = nil) async throws {
        let owned = self.state.withLock { state -> Bool in
            guard state.streams[channel] != nil else { return false }
            state.streams[channel]?.filling = true
            if let cursor { state.streams[channel]?.delivered = cursor }
            return true
        }
        guard owned else { return }
        defer { self.state.withLock { $0.streams[channel]?.filling = false } }
        while true {
            guard let after = self.state.withLock({ $0.streams[channel]?.delivered }) ?? nil else { return }
            if let target, after >= target { return }
            var limit = Self.replayPage
            if let target { limit = Int(min(Int64(limit), target - after)) }
            let page = try await self.store.events(channel: channel, after: after, limit: limit)
            try await self.writeInOrder(channel, page.map { ($0.seq, ByteBuffer(string: $0.json)) })
            if page.count < limit { return }
        }
    }

    /// Reads the user's channels again in a second: they could not be read (Redis unreachable),
    /// and without them the socket would follow nothing, or miss a channel it joined.
    private func refreshChannelsSoon() {
        self.channel.eventLoop.scheduleTask(in: .seconds(1)) {
            if self.channel.isActive { self.receive(.channelsChanged) }
        }
    }

    /// Starts each of `channels` that has nothing delivered yet at its last seq (a read that
    /// fails leaves them live from their first event).
    private func anchorAtLogEnd(_ channels: [String]) async {
        guard let seqs = try? await self.store.lastSeqs(channels: channels) else { return }
        self.state.withLock { state in
            for (channel, seq) in seqs where state.streams[channel] != nil && state.streams[channel]?.delivered == nil {
                state.streams[channel]?.delivered = seq
            }
        }
    }

    private func refreshChannels() async throws {
        let now = Set(try await self.store.memberChannels(user: self.user))
        // Channels that could not be read at connect are not new: they start at the log's end.
        let known = self.state.withLock { $0.channelsKnown }
        let following = self.following
        let joined = now.subtracting(following)
        let left = following.subtracting(now)
        if !left.isEmpty {
            self.hub.detach(self, channels: left)
            self.state.withLock { state in for channel in left { state.streams[channel] = nil } }
        }
        guard !joined.isEmpty else {
            self.state.withLock { $0.channelsKnown = true }
            return
        }
        self.state.withLock { state in
            // Owned by this task until filled below: live events queue behind the fill.
            for channel in joined { state.streams[channel] = Stream(delivered: nil, queued: 0, filling: true) }
        }
        await self.hub.attach(self, channels: joined)
        var pending = joined
        do {
            let seqs = known ? [:] : try await self.store.lastSeqs(channels: joined.sorted())
            for channel in joined.sorted() {
                if let last = seqs[channel] {
                    try await self.fill(channel, through: nil, from: last)
                } else {
                    // Start at the user's own member_joined, so the client learns it joined.
                    let start = try await self.store.joinSeq(channel: channel, user: self.user)
                    try await self.fill(channel, through: nil, from: start - 1)
                }
                pending.remove(channel)
            }
            self.state.withLock { $0.channelsKnown = true }
        } catch {
            // Not started: forgotten, so that the next refresh finds them new again.
            self.hub.detach(self, channels: pending)
            self.state.withLock { state in for channel in pending { state.streams[channel] = nil } }
            throw error
        }
    }

    // MARK: Client frames

    /// A client frame; which fields matter depends on `type`.
    struct ClientFrame: Decodable {
        var type: String
        var cursors: [String: Int64]?
        var channel_id: String?
        var client_msg_id: String?
        var text: String?
        var seq: Int64?
    }

    private func handle(text: String) async throws {
        guard StrictJSON.isValid(text.utf8), let frame = try? JSONDecoder().decode(ClientFrame.self, from: Data(text.utf8)) else {
            try await self.write(
                Self.error(code: "bad_request", message: "frames are JSON objects with a type and typed fields")
            )
            return
        }
        switch frame.type {
        case "ping":
            try await self.write("{\"type\":\"pong\"}")
        case "resume":
            guard let cursors = frame.cursors else {
                try await self.write(Self.error(code: "bad_request", message: "resume needs cursors: {channel_id: seq}"))
                return
            }
            for (channel, cursor) in cursors.sorted(by: { $0.key < $1.key }) {
                guard cursor >= 0, Identifier.isValid(channel) else {
                    try await self.write(Self.error(code: "bad_request", message: "bad cursor for \(channel)"))
                    continue
                }
                guard self.state.withLock({ $0.streams[channel] != nil }) else {
                    try await self.write(
                        Self.error(code: "forbidden", message: "not a member of \(channel)", channel: channel)
                    )
                    continue
                }
                // A cursor past the log's end (a client that knew an earlier channel of that id)
                // would hold back every live event up to it: resume from the end instead.
                let last = try await self.store.lastSeq(channel: channel)
                try await self.fill(channel, through: nil, from: min(cursor, last))
            }
            try await self.write("{\"type\":\"resumed\"}")
        case "send":
            do {
                guard let channel = frame.channel_id, let clientMessageID = frame.client_msg_id, let text = frame.text else {
                    throw APIError.badRequest("send needs channel_id, client_msg_id and text")
                }
                guard Identifier.isValid(channel) else { throw APIError.badRequest("channel_id: not an id") }
                let id = try self.messages.clientMessageID(clientMessageID)
                let body = try self.messages.parsing.text(text)
                let (_, event) = try await self.store.send(channel: channel, sender: self.user, clientMessageID: id, text: body)
                let seq = Self.field("seq", in: event) ?? "0"
                let messageID = Self.field("message_id", in: event) ?? ""
                try await self.write(
                    "{\"type\":\"ack\",\"client_msg_id\":\(JSONText.quoted(id)),\"channel_id\":\"\(channel)\",\"seq\":\(seq),\"message_id\":\"\(messageID)\"}"
                )
            } catch {
                let apiError = APIError(from: error)
                try await self.write(
                    Self.error(code: apiError.code.name, message: apiError.message, clientMessageID: frame.client_msg_id)
                )
            }
        case "read":
            do {
                guard let channel = frame.channel_id, Identifier.isValid(channel), let seq = frame.seq, seq >= 0 else {
                    throw APIError.badRequest("read needs channel_id and a seq")
                }
                let last = try await self.store.markRead(channel: channel, user: self.user, session: self.session, seq: seq)
                try await self.write("{\"type\":\"read_ok\",\"channel_id\":\"\(channel)\",\"last_read_seq\":\(last)}")
            } catch {
                let apiError = APIError(from: error)
                try await self.write(
                    Self.error(code: apiError.code.name, message: apiError.message, channel: frame.channel_id)
                )
            }
        default:
            try await self.write(Self.error(code: "bad_request", message: "unknown frame type \(frame.type)"))
        }
    }

    private static func error(code: String, message: String, clientMessageID: String? = nil, channel: String? = nil) -> String {
        var json = "{\"type\":\"error\",\"code\":\"\(code)\",\"message\":\(JSONText.quoted(message))"
        if let clientMessageID { json += ",\"client_msg_id\":\(JSONText.quoted(clientMessageID))" }
        // Quoted, not spliced: the channel id may be whatever a malformed frame carried.
        if let channel { json += ",\"channel_id\":\(JSONText.quoted(channel))" }
        return json + "}"
    }

    /// A top-level scalar field of an event's JSON (the relay wrote it, so its shape is known).
    static func field(_ name: String, in json: String) -> Substring? {
        guard let range = json.range(of: "\"\(name)\":") else { return nil }
        var rest = json[range.upperBound...]
        if rest.first == "\"" {
            rest = rest.dropFirst()
            return rest.prefix { $0 != "\"" }
        }
        return rest.prefix { $0 != "," && $0 != "}" }
    }
}
