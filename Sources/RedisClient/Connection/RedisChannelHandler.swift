import NIOCore

/// Reads and writes one Redis connection; the protocol logic lives in ``StateMachine``.
///
/// All methods run on the channel's event loop. Writes made during one event-loop tick are
/// flushed together, so concurrent callers share syscalls.
final class RedisChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    /// Who waits for a reply: one caller, or one slot of a pipeline.
    enum Completion {
        case single(CheckedContinuation<RESPValue, any Error>)
        case pipeline(PipelineCollector, Int)
        /// A caller on an event loop, with no task waiting.
        case promise(EventLoopPromise<RESPValue>)
        /// A caller that reads the reply in place, on the reader's tape.
        case decoder(any RESPReplyDecoder)

        /// Hands over `reply`: read in place by a decoder, as a ``RESPValue`` to everyone else.
        func succeed(_ reply: RESPReply) {
            if let message = reply.errorMessage {
                self.fail(RedisError(.serverError, message))
                return
            }
            switch self {
            case .decoder(let decoder): decoder.decode(reply)
            default: self.succeed(reply.value())
            }
        }

        func succeed(_ value: RESPValue) {
            if case .error(let message) = value {
                self.fail(RedisError(.serverError, message))
                return
            }
            switch self {
            case .single(let continuation): continuation.resume(returning: value)
            case .promise(let promise): promise.succeed(value)
            case .pipeline(let collector, let index): collector.complete(index, .success(value))
            case .decoder(let decoder): decoder.fail(RedisError(.protocolViolation, "no reply to decode: \(value)"))
            }
        }

        func fail(_ error: any Error) {
            switch self {
            case .single(let continuation): continuation.resume(throwing: error)
            case .promise(let promise): promise.fail(error)
            case .decoder(let decoder): decoder.fail(error)
            case .pipeline(let collector, let index):
                collector.complete(index, .failure(error as? RedisError ?? RedisError(.connectionClosed, "\(error)")))
            }
        }
    }

    private var stateMachine = StateMachine<Completion>()
    private let reader = RESPReader()
    private var context: ChannelHandlerContext?
    /// The channel's loop, kept after the handler leaves: a command refused then fails on it.
    private var eventLoop: (any EventLoop)?
    private var flushScheduled = false
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    /// Set on a subscriber connection: receives every Pub/Sub push.
    private let onPush: ((RedisPush) -> Void)?

    init(onPush: ((RedisPush) -> Void)? = nil) {
        self.onPush = onPush
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.eventLoop = context.eventLoop
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.failAll(RedisError(.connectionClosed, "connection closed"))
        self.context = nil
    }

    // MARK: Outbound

    /// Writes an encoded command whose reply goes to `completion`, which is never completed
    /// within this call: a caller on the loop (``RedisConnection`` calls at once from there) may
    /// be in the middle of its own work, and the next command it sends on failure would fail
    /// the same way, one call deeper each time.
    func send(_ bytes: ByteBuffer, id: UInt64, completion: Completion, deadline: NIODeadline) {
        switch self.stateMachine.send(id: id, continuation: completion, deadline: deadline) {
        case .write:
            self.write(bytes)
            self.armTimer(for: deadline)
        case .fail(let completion, let error):
            self.failLater(completion, error)
        }
    }

    /// Fails `completion` once the current call has returned.
    private func failLater(_ completion: Completion, _ error: RedisError) {
        guard let eventLoop = self.eventLoop else { return completion.fail(error) }
        eventLoop.execute { completion.fail(error) }
    }

    /// Writes a pipeline: every command is registered, then all go out in one flush.
    func send(_ bytes: ByteBuffer, ids: Range<UInt64>, completions: [Completion], deadline: NIODeadline) {
        var written = false
        for (id, completion) in zip(ids, completions) {
            switch self.stateMachine.send(id: id, continuation: completion, deadline: deadline) {
            case .write: written = true
            case .fail(let completion, let error): self.failLater(completion, error)
            }
        }
        if written {
            self.write(bytes)
            self.armTimer(for: deadline)
        }
    }

    /// Writes a command that gets no positional reply (Pub/Sub subscriptions answer as pushes).
    func sendWithoutReply(_ bytes: ByteBuffer) {
        guard case .active = self.stateMachine.state else { return }
        self.write(bytes)
    }

    func cancel(id: UInt64) {
        if case .fail(let completion) = self.stateMachine.cancel(id: id) {
            completion.fail(CancellationError())
        }
    }

    func close() {
        self.context?.close(promise: nil)
    }

    private func write(_ bytes: ByteBuffer) {
        guard let context = self.context else { return }
        context.write(NIOAny(bytes), promise: nil)
        guard !self.flushScheduled else { return }
        self.flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            self.context?.flush()
        }
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        do {
            try self.reader.feed(buffer)
            while let reply = try self.reader.nextReply() {
                // On a subscriber, pushes (and cluster refusals) go to its handler, not to a request.
                var value: RESPValue?
                if let onPush = self.onPush {
                    // A message, a subscriber's traffic, is read in place: only its topic and
                    // payload are copied out.
                    if let message = Self.message(reply, allocator: context.channel.allocator) {
                        onPush(message)
                        continue
                    }
                    let pushed = reply.value()
                    if Self.isPush(pushed) || Self.isClusterRefusal(pushed) {
                        onPush(.other(pushed))
                        continue
                    }
                    value = pushed
                }
                switch self.stateMachine.receivedReply() {
                case .succeed(let completion):
                    if let value { completion.succeed(value) } else { completion.succeed(reply) }
                case .drop: break
                case .closeConnection(let error): self.closeWithError(error, context: context)
                }
            }
        } catch {
            self.closeWithError(error, context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.failAll(RedisError(.connectionClosed, "connection to Redis closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.closeWithError(RedisError(.connectionClosed, "connection to Redis failed: \(error)"), context: context)
    }

    private func closeWithError(_ error: RedisError, context: ChannelHandlerContext) {
        self.failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        self.timer?.cancel()
        self.timer = nil
        for completion in self.stateMachine.close(error: error) {
            completion.fail(error)
        }
    }

    // MARK: Timeouts

    private func armTimer(for deadline: NIODeadline) {
        guard self.timer == nil, let context = self.context else { return }
        self.timerDeadline = deadline
        self.timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { self.timerFired() }
    }

    private func timerFired() {
        self.timer = nil
        switch self.stateMachine.checkDeadline(now: .now()) {
        case .none:
            break
        case .schedule(let deadline):
            self.armTimer(for: deadline)
        case .timeout(let failures):
            for (completion, error) in failures { completion.fail(error) }
            self.context?.close(promise: nil)
        }
    }

    /// A `message` or `smessage` push (`[kind, topic, payload]`) as a ``RedisPush/message(topic:payload:)``.
    static func message(_ reply: RESPReply, allocator: ByteBufferAllocator) -> RedisPush? {
        var cursor = reply.cursor
        guard case .array(count: 3)? = cursor.next(), case .bulkString(let kind)? = cursor.next(),
            kind.elementsEqual("smessage".utf8) || kind.elementsEqual("message".utf8),
            case .bulkString(let topic)? = cursor.next(), case .bulkString(let payload)? = cursor.next()
        else { return nil }
        return .message(topic: String(decoding: topic, as: UTF8.self), payload: allocator.buffer(bytes: payload))
    }

    /// Pub/Sub messages and subscription confirmations, as RESP2 sends them on a subscriber.
    static func isPush(_ value: RESPValue) -> Bool {
        guard case .array(let elements) = value, elements.count >= 3, case .bulkString(let kind) = elements[0] else {
            return false
        }
        switch kind.readableBytes {
        case 7...12:
            let name = String(buffer: kind)
            return pushKinds.contains(name)
        default:
            return false
        }
    }

    /// On a subscriber, the error a cluster node answers `SSUBSCRIBE` with when it does not
    /// serve the slot: subscriptions have no positional reply, so it goes to the push handler.
    static func isClusterRefusal(_ value: RESPValue) -> Bool {
        guard case .error(let message) = value else { return false }
        return message.hasPrefix("MOVED ") || message.hasPrefix("ASK ") || message.hasPrefix("CLUSTERDOWN")
            || message.hasPrefix("TRYAGAIN")
    }

    private static let pushKinds: Set<String> = [
        "message", "smessage", "pmessage", "subscribe", "ssubscribe", "psubscribe",
        "unsubscribe", "sunsubscribe", "punsubscribe",
    ]
}

/// What a subscriber connection hands its push handler.
public enum RedisPush: Sendable {
    /// A `message` or `smessage` push, read where it lay.
    case message(topic: String, payload: ByteBuffer)
    /// Any other push (a subscription's confirmation, an unasked `sunsubscribe`), or a cluster
    /// node's refusal of a subscription.
    case other(RESPValue)
}

/// Collects the replies of one pipeline and resumes its caller once all have arrived.
final class PipelineCollector: @unchecked Sendable {
    // Only touched on the connection's event loop, which completes every slot.
    private var results: [Result<RESPValue, RedisError>?]
    private var remaining: Int
    private let continuation: CheckedContinuation<[Result<RESPValue, RedisError>], Never>

    init(count: Int, continuation: CheckedContinuation<[Result<RESPValue, RedisError>], Never>) {
        self.results = Array(repeating: nil, count: count)
        self.remaining = count
        self.continuation = continuation
        if count == 0 { continuation.resume(returning: []) }
    }

    func complete(_ index: Int, _ result: Result<RESPValue, any Error>) {
        guard self.results[index] == nil else { return }
        self.results[index] = result.mapError { $0 as? RedisError ?? RedisError(.connectionClosed, "\($0)") }
        self.remaining -= 1
        if self.remaining == 0 {
            self.continuation.resume(returning: self.results.map { $0! })
        }
    }
}

/// Reads a reply where it lies, on the connection's event loop, and hands on what it made of it.
protocol RESPReplyDecoder: Sendable {
    /// `reply` is valid only during the call.
    func decode(_ reply: RESPReply)
    func fail(_ error: any Error)
}

/// A decoder whose result, or the error that took its place, is handed to `then` on
/// `eventLoop`: at once when the reply was read there (a socket's command on its own loop's
/// connection), else as a task of that loop.
struct RESPDecodingCallback<Value: Sendable>: RESPReplyDecoder {
    let eventLoop: any EventLoop
    let body: @Sendable (RESPReply) throws -> Value
    let then: @Sendable (Result<Value, any Error>) -> Void

    func decode(_ reply: RESPReply) {
        self.complete(Result { try self.body(reply) })
    }

    func fail(_ error: any Error) {
        self.complete(.failure(error))
    }

    private func complete(_ result: Result<Value, any Error>) {
        guard self.eventLoop.inEventLoop else {
            let then = self.then
            self.eventLoop.execute { then(result) }
            return
        }
        self.then(result)
    }
}
