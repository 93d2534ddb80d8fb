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
/// Everything that changes the connection's state runs on one task, in the order it arrived
/// (hub signals and client frames share one inbox), so replay and live events never interleave.
/// The inbox is bounded: a client too slow to take what it is sent is closed with 4008.
final class LiveConnection: LiveReceiver, Sendable {
    enum Input: Sendable {
        case signal(LiveSignal)
        case frame(WebSocketMessage)
    }

    let user: String
    let session: String
    let id: String
    private let store: ChatStore
    private let hub: FanoutHub
    private let messages: MessageRoutes
    private let maxQueued: Int
    private let inbox: AsyncStream<Input>.Continuation
    private let inputs: AsyncStream<Input>
    private let queued = Atomic<Int>(0)
    private let overflow = Atomic<Bool>(false)
    private let overflowSignal: AsyncStream<Void>.Continuation
    private let overflowed: AsyncStream<Void>
    /// Channel → last seq delivered. Only the processing task touches it.
    private let delivered = Mutex<[String: Int64]>([:])
    /// The channels this connection follows. Only the processing task changes it.
    private let following = Mutex<Set<String>>([])

    static let replayPage = 200

    init(user: String, session: String, store: ChatStore, hub: FanoutHub, messages: MessageRoutes, maxQueued: Int) {
        self.user = user
        self.session = session
        self.id = Identifier.make(prefix: "w")
        self.store = store
        self.hub = hub
        self.messages = messages
        self.maxQueued = maxQueued
        (self.inputs, self.inbox) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
        (self.overflowed, self.overflowSignal) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// From the hub's task: queue, never block.
    func receive(_ signal: LiveSignal) {
        guard !self.overflow.load(ordering: .relaxed) else { return }
        if self.queued.add(1, ordering: .relaxed).newValue > self.maxQueued {
            self.overflow.store(true, ordering: .relaxed)
            self.overflowSignal.yield()
            return
        }
        self.inbox.yield(.signal(signal))
    }

    /// Serves the socket until the client leaves, the server stops, or the client falls behind.
    func run(
        inbound: WebSocketInboundStream,
        outbound: WebSocketOutboundWriter,
        channel: any Channel,
        heartbeat: Duration,
        expiresAt: Int64
    ) async {
        let channels = (try? await self.store.memberChannels(user: self.user)) ?? []
        self.following.withLock { $0 = Set(channels) }
        await self.hub.attach(self, channels: channels, user: self.user)
        let hello =
            "{\"type\":\"hello\",\"user_id\":\"\(self.user)\",\"session_id\":\"\(self.session)\",\"connection_id\":\"\(self.id)\""
            + ",\"heartbeat_ms\":\(heartbeat.components.seconds * 1000 + heartbeat.components.attoseconds / 1_000_000_000_000_000)}"
        try? await self.write(hello, to: outbound)

        let ending = await self.serve(inbound: inbound, outbound: outbound, channel: channel, heartbeat: heartbeat, expiresAt: expiresAt)
        self.hub.detach(self, channels: self.following.withLock { $0 }, user: self.user)
        switch ending {
        case .overflow:
            break
        case .expired:
            try? await outbound.close(.unknown(4001), reason: "token expired")
        case .clientLeft, .processingEnded:
            break
        }
    }

    enum Ending { case clientLeft, overflow, expired, processingEnded }

    /// Reads frames, processes the inbox and keeps presence until the first of them ends.
    private func serve(
        inbound: WebSocketInboundStream,
        outbound: WebSocketOutboundWriter,
        channel: any Channel,
        heartbeat: Duration,
        expiresAt: Int64
    ) async -> Ending {
        await withTaskGroup(of: Ending.self) { group in
            group.addTask {
                do {
                    for try await message in inbound.messages(maxSize: self.store.limits.maxBodyBytes) {
                        self.inbox.yield(.frame(message))
                    }
                } catch {}
                return .clientLeft
            }
            group.addTask {
                for await input in self.inputs {
                    if case .signal = input { self.queued.subtract(1, ordering: .relaxed) }
                    do {
                        try await self.process(input, outbound: outbound)
                    } catch is CancellationError {
                        break
                    } catch {
                        // A write to a closed socket: the reader notices the close too.
                        if !(error is RedisError) && !(error is APIError) { break }
                    }
                }
                return .processingEnded
            }
            group.addTask {
                for await _ in self.overflowed {
                    // The processing task may be stuck writing to this client: close the channel
                    // under it. The close frame goes first, for a client that still reads.
                    Self.closeNow(channel, code: 4008, reason: "slow consumer: resume from your cursor")
                    return .overflow
                }
                return .processingEnded
            }
            group.addTask {
                await self.keepPresence(every: heartbeat, until: expiresAt)
                return Task.isCancelled ? .processingEnded : .expired
            }
            let first = await group.next() ?? .clientLeft
            self.inbox.finish()
            self.overflowSignal.finish()
            group.cancelAll()
            return first
        }
    }

    /// Writes a close frame and closes the channel a moment later, whatever is pending.
    static func closeNow(_ channel: any Channel, code: UInt16, reason: String) {
        var data = channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.writeInteger(code)
        data.writeString(reason)
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: data), promise: nil)
        channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
    }

    private func keepPresence(every heartbeat: Duration, until expiresAt: Int64) async {
        let key = RelayKeys.User(self.user).presence
        let ttl = heartbeat * 2
        while !Task.isCancelled {
            _ = try? await self.store.redis.set(key, to: self.id, expiresIn: ttl)
            let untilExpiry = Duration.seconds(max(0, expiresAt - Clock.seconds()))
            guard untilExpiry > .zero else { return }
            try? await Task.sleep(for: min(heartbeat, untilExpiry))
        }
    }

    // MARK: Processing (one task)

    private func process(_ input: Input, outbound: WebSocketOutboundWriter) async throws {
        let following = self.following.withLock { $0 }
        switch input {
        case .signal(.event(let channel, let seq, let frame)):
            guard following.contains(channel) else { return }
            let last = self.delivered.withLock { $0[channel] }
            guard let last else {
                try await self.deliver(channel, seq, frame, outbound)
                return
            }
            guard seq > last else { return }
            if seq > last + 1 {
                try await self.fill(channel, through: seq - 1, outbound: outbound)
            }
            if seq == (self.delivered.withLock { $0[channel] } ?? 0) + 1 {
                try await self.deliver(channel, seq, frame, outbound)
            }
        case .signal(.mayHaveMissed(let channel)):
            guard following.contains(channel), self.delivered.withLock({ $0[channel] }) != nil else { return }
            try await self.fill(channel, through: nil, outbound: outbound)
        case .signal(.channelsChanged):
            try await self.refreshChannels(following, outbound: outbound)
        case .frame(.text(let text)):
            try await self.handle(text: text, outbound: outbound, following: following)
        case .frame(.binary):
            try await self.write(
                "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"binary frames are not understood\"}",
                to: outbound
            )
        }
    }

    private func deliver(_ channel: String, _ seq: Int64, _ frame: ByteBuffer, _ outbound: WebSocketOutboundWriter) async throws {
        try await outbound.write(.custom(WebSocketFrame(fin: true, opcode: .text, data: frame)))
        self.delivered.withLock { $0[channel] = seq }
    }

    /// Delivers the log's events after the last delivered one, up to `target` (or to the end).
    private func fill(_ channel: String, through target: Int64?, outbound: WebSocketOutboundWriter) async throws {
        while true {
            let after = self.delivered.withLock { $0[channel] } ?? 0
            if let target, after >= target { return }
            var limit = Self.replayPage
            if let target { limit = Int(min(Int64(limit), target - after)) }
            let page = try await self.store.events(channel: channel, after: after, limit: limit)
            for event in page where event.seq > (self.delivered.withLock { $0[channel] } ?? 0) {
                try await self.deliver(channel, event.seq, ByteBuffer(string: event.json), outbound)
            }
            if page.count < limit { return }
        }
    }

    private func refreshChannels(_ following: Set<String>, outbound: WebSocketOutboundWriter) async throws {
        let now = Set(try await self.store.memberChannels(user: self.user))
        let joined = now.subtracting(following)
        let left = following.subtracting(now)
        if !left.isEmpty {
            self.hub.detach(self, channels: left)
            self.delivered.withLock { delivered in for channel in left { delivered[channel] = nil } }
        }
        self.following.withLock { $0 = now }
        guard !joined.isEmpty else { return }
        await self.hub.attach(self, channels: joined)
        for channel in joined {
            // Start at the user's own member_joined, so the client learns it joined.
            let start = try await self.store.joinSeq(channel: channel, user: self.user)
            self.delivered.withLock { $0[channel] = start - 1 }
            try await self.fill(channel, through: nil, outbound: outbound)
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

    private func handle(text: String, outbound: WebSocketOutboundWriter, following: Set<String>) async throws {
        guard StrictJSON.isValid(text.utf8), let frame = try? JSONDecoder().decode(ClientFrame.self, from: Data(text.utf8)) else {
            try await self.write(
                Self.error(code: "bad_request", message: "frames are JSON objects with a type and typed fields"),
                to: outbound
            )
            return
        }
        switch frame.type {
        case "ping":
            try await self.write("{\"type\":\"pong\"}", to: outbound)
        case "resume":
            guard let cursors = frame.cursors else {
                try await self.write(Self.error(code: "bad_request", message: "resume needs cursors: {channel_id: seq}"), to: outbound)
                return
            }
            for (channel, cursor) in cursors.sorted(by: { $0.key < $1.key }) {
                guard cursor >= 0, Identifier.isValid(channel) else {
                    try await self.write(Self.error(code: "bad_request", message: "bad cursor for \(channel)"), to: outbound)
                    continue
                }
                guard following.contains(channel) else {
                    try await self.write(
                        Self.error(code: "forbidden", message: "not a member of \(channel)", channel: channel),
                        to: outbound
                    )
                    continue
                }
                self.delivered.withLock { $0[channel] = cursor }
                try await self.fill(channel, through: nil, outbound: outbound)
            }
            try await self.write("{\"type\":\"resumed\"}", to: outbound)
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
                    "{\"type\":\"ack\",\"client_msg_id\":\(JSONText.quoted(id)),\"channel_id\":\"\(channel)\",\"seq\":\(seq),\"message_id\":\"\(messageID)\"}",
                    to: outbound
                )
            } catch {
                let apiError = APIError(from: error)
                try await self.write(
                    Self.error(code: apiError.code.name, message: apiError.message, clientMessageID: frame.client_msg_id),
                    to: outbound
                )
            }
        case "read":
            do {
                guard let channel = frame.channel_id, Identifier.isValid(channel), let seq = frame.seq, seq >= 0 else {
                    throw APIError.badRequest("read needs channel_id and a seq")
                }
                let last = try await self.store.markRead(channel: channel, user: self.user, session: self.session, seq: seq)
                try await self.write("{\"type\":\"read_ok\",\"channel_id\":\"\(channel)\",\"last_read_seq\":\(last)}", to: outbound)
            } catch {
                let apiError = APIError(from: error)
                try await self.write(
                    Self.error(code: apiError.code.name, message: apiError.message, channel: frame.channel_id),
                    to: outbound
                )
            }
        default:
            try await self.write(Self.error(code: "bad_request", message: "unknown frame type \(frame.type)"), to: outbound)
        }
    }

    private func write(_ text: String, to outbound: WebSocketOutboundWriter) async throws {
        try await outbound.write(.text(text))
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
