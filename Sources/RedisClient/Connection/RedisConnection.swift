import Logging
import NIOCore
import NIOPosix
import Synchronization

/// One connection to Redis: many commands in flight, replies in order.
///
/// Commands may be sent from any task. A command in flight when the connection dies fails
/// with ``RedisError/Code/connectionClosed``; none waits longer than its timeout.
public final class RedisConnection: Sendable {
    let channel: any Channel
    private let handler: NIOLoopBound<RedisChannelHandler>
    private let nextID = Atomic<UInt64>(0)
    private let commandTimeout: TimeAmount
    /// Whether Redis takes `CLIENT REPLY` on this connection (a ``Silencing``'s raw value).
    private let silencing = Atomic<UInt8>(Silencing.unasked.rawValue)

    private enum Silencing: UInt8 {
        case unasked, taken, refused
    }

    private init(channel: any Channel, handler: NIOLoopBound<RedisChannelHandler>, commandTimeout: TimeAmount) {
        self.channel = channel
        self.handler = handler
        self.commandTimeout = commandTimeout
    }

    /// Connects, then authenticates and selects the database the configuration names.
    ///
    /// - Parameter onPush: set for a subscriber connection; receives Pub/Sub pushes on the
    ///   event loop, and must not block.
    public static func connect(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop,
        onPush: (@Sendable (RedisPush) -> Void)? = nil
    ) async throws -> RedisConnection {
        let timeout = TimeAmount(configuration.commandTimeout)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(TimeAmount(configuration.connectTimeout))
                .channelOption(.socketOption(.so_keepalive), value: 1)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(RedisChannelHandler(onPush: onPush))
                    }
                }
                .connect(host: configuration.host, port: configuration.port)
                .get()
        } catch {
            throw RedisError(
                .unavailable,
                "cannot connect to Redis at \(configuration.host):\(configuration.port): \(Self.reason(connecting: error))"
            )
        }
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: RedisChannelHandler.self), eventLoop: channel.eventLoop)
        }.get()
        let connection = RedisConnection(channel: channel, handler: handler, commandTimeout: timeout)
        do {
            if let password = configuration.password {
                var auth = RedisCommand("AUTH")
                if let username = configuration.username { auth.append(username) }
                auth.append(password)
                _ = try await connection.execute(auth)
            }
            if configuration.database != 0 {
                _ = try await connection.execute(RedisCommand("SELECT", [configuration.database]))
            }
        } catch {
            connection.close()
            throw error
        }
        return connection
    }

    /// Sends one command and waits for its reply.
    ///
    /// - Throws: ``RedisError`` with ``RedisError/Code/serverError`` for an error reply, or a
    ///   transport code; `CancellationError` if the task is cancelled first.
    public func execute(_ command: RedisCommand) async throws -> RESPValue {
        try await self.execute(encoded: command.encoded(allocator: self.channel.allocator))
    }

    /// ``execute(_:)`` for `bytes`, commands that Redis answers with one reply in all.
    private func execute(encoded bytes: ByteBuffer) async throws -> RESPValue {
        let id = self.nextID.add(1, ordering: .relaxed).newValue
        let handler = self.handler
        let eventLoop = self.channel.eventLoop
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                self.send(encoded: bytes, id: id, completion: .single(continuation))
            }
        } onCancel: {
            eventLoop.execute { handler.value.cancel(id: id) }
        }
    }

    /// Sends one command; the future completes on `eventLoop` with its reply (failed with a
    /// ``RedisError`` as ``execute(_:)`` throws one). For callers on an event loop: no task waits.
    package func execute(_ command: RedisCommand, on eventLoop: any EventLoop) -> EventLoopFuture<RESPValue> {
        let promise = eventLoop.makePromise(of: RESPValue.self)
        self.send(command, id: self.nextID.add(1, ordering: .relaxed).newValue, completion: .promise(promise))
        return promise.futureResult
    }

    /// Sends one command (after `ASKING`, when `asking`, in the same write) and reads its reply
    /// in place with `decode`, on the connection's event loop; the future completes on
    /// `eventLoop` with what `decode` made of it (failed with a ``RedisError`` as
    /// ``execute(_:)`` throws one, or with what `decode` threw). `decode` must copy what it keeps.
    package func execute<Value: Sendable>(
        _ command: RedisCommand,
        asking: Bool = false,
        on eventLoop: any EventLoop,
        decode: @escaping @Sendable (RESPReply) throws -> Value
    ) -> EventLoopFuture<Value> {
        let promise = eventLoop.makePromise(of: Value.self)
        self.execute(command, asking: asking, on: eventLoop, decode: decode, then: promise.completeWith)
        return promise.futureResult
    }

    /// ``execute(_:asking:on:decode:)`` with no future: `then` is called once, on `eventLoop`,
    /// and never within this call.
    package func execute<Value: Sendable>(
        _ command: RedisCommand,
        asking: Bool = false,
        on eventLoop: any EventLoop,
        decode: @escaping @Sendable (RESPReply) throws -> Value,
        then: @escaping @Sendable (Result<Value, any Error>) -> Void
    ) {
        let decoder = RedisChannelHandler.Completion.decoder(RESPDecodingCallback(eventLoop: eventLoop, body: decode, then: then))
        guard asking else {
            self.send(command, id: self.nextID.add(1, ordering: .relaxed).newValue, completion: decoder)
            return
        }
        // ASKING's own answer tells nothing the command's does not.
        self.send([RedisCommand("ASKING"), command], completions: [.promise(eventLoop.makePromise()), decoder])
    }

    /// Runs `commands` for their effect alone, in one write between `CLIENT REPLY OFF` and
    /// `CLIENT REPLY ON`: Redis sends one reply for them all (`ON`'s), so none is parsed, and
    /// Redis writes none. Returns once that reply is here, every command having run; their own
    /// errors are not sent either. Where Redis refuses `CLIENT REPLY` (the command renamed away,
    /// or denied by an ACL; asked once per connection), they go as a pipeline, replies dropped.
    ///
    /// - Throws: ``RedisError`` as ``execute(_:)`` throws one, for the write as a whole.
    func executeWithoutReplies(_ commands: some Collection<RedisEncodedCommand>) async throws {
        guard !commands.isEmpty else { return }
        if self.silencing.load(ordering: .relaxed) == Silencing.unasked.rawValue {
            // Should Redis not take it, every command's reply would come back and be handed to
            // the callers after these: asked on its own first.
            do {
                _ = try await self.execute(Self.repliesOn.command)
                self.silencing.store(Silencing.taken.rawValue, ordering: .relaxed)
            } catch let error as RedisError where error.code == .serverError {
                self.silencing.store(Silencing.refused.rawValue, ordering: .relaxed)
            }
        }
        guard self.silencing.load(ordering: .relaxed) == Silencing.taken.rawValue else {
            _ = await self.pipeline(commands.map(\.command))
            return
        }
        let size = commands.reduce(Self.repliesOff.bytes.count + Self.repliesOn.bytes.count) { $0 + $1.bytes.count }
        var buffer = self.channel.allocator.buffer(capacity: size)
        buffer.writeBytes(Self.repliesOff.bytes)
        for command in commands { buffer.writeBytes(command.bytes) }
        buffer.writeBytes(Self.repliesOn.bytes)
        _ = try await self.execute(encoded: buffer)
    }

    private static let repliesOff = RedisEncodedCommand(RedisCommand("CLIENT", ["REPLY", "OFF"]))
    private static let repliesOn = RedisEncodedCommand(RedisCommand("CLIENT", ["REPLY", "ON"]))

    /// Encodes `command` here and hands it, with whoever waits for its reply, to the connection's loop.
    private func send(_ command: RedisCommand, id: UInt64, completion: RedisChannelHandler.Completion) {
        self.send(encoded: command.encoded(allocator: self.channel.allocator), id: id, completion: completion)
    }

    /// Hands `bytes`, commands that Redis answers with one reply in all, with whoever waits for
    /// it, to the connection's loop: at once when called there (a socket's command on its own
    /// loop's connection), else as a task of that loop.
    private func send(encoded bytes: ByteBuffer, id: UInt64, completion: RedisChannelHandler.Completion) {
        let deadline = NIODeadline.now() + self.commandTimeout
        if self.channel.eventLoop.inEventLoop {
            self.handler.value.send(bytes, id: id, completion: completion, deadline: deadline)
            return
        }
        let handler = self.handler
        self.channel.eventLoop.execute {
            handler.value.send(bytes, id: id, completion: completion, deadline: deadline)
        }
    }

    /// Sends every command in one write and returns their results in order.
    ///
    /// Each result is the reply or that command's own error; a lost connection fails the
    /// commands that had no reply yet.
    public func pipeline(_ commands: [RedisCommand]) async -> [Result<RESPValue, RedisError>] {
        await withCheckedContinuation { continuation in
            let collector = PipelineCollector(count: commands.count, continuation: continuation)
            guard !commands.isEmpty else { return }
            self.send(commands, completions: (0..<commands.count).map { .pipeline(collector, $0) })
        }
    }

    /// ``send(_:id:completion:)`` for several commands, in one write.
    private func send(_ commands: [RedisCommand], completions: [RedisChannelHandler.Completion]) {
        var buffer = self.channel.allocator.buffer(capacity: 64 * commands.count)
        for command in commands { command.encode(into: &buffer) }
        let bytes = buffer
        let count = UInt64(commands.count)
        let last = self.nextID.add(count, ordering: .relaxed).newValue
        let ids = (last - count + 1)..<(last + 1)
        let deadline = NIODeadline.now() + self.commandTimeout
        if self.channel.eventLoop.inEventLoop {
            self.handler.value.send(bytes, ids: ids, completions: completions, deadline: deadline)
            return
        }
        let handler = self.handler
        self.channel.eventLoop.execute {
            handler.value.send(bytes, ids: ids, completions: completions, deadline: deadline)
        }
    }

    /// Writes a command that gets no positional reply (subscriptions on a subscriber connection).
    func sendWithoutReply(_ command: RedisCommand) {
        var buffer = self.channel.allocator.buffer(capacity: 64)
        command.encode(into: &buffer)
        let bytes = buffer
        let handler = self.handler
        self.channel.eventLoop.execute { handler.value.sendWithoutReply(bytes) }
    }

    /// Closes the connection; commands in flight fail with ``RedisError/Code/connectionClosed``.
    public func close() {
        let handler = self.handler
        self.channel.eventLoop.execute { handler.value.close() }
    }

    /// Waits until the connection has closed, for whatever reason.
    public func closed() async {
        try? await self.channel.closeFuture.get()
    }

    public var isActive: Bool { self.channel.isActive }
}

extension RedisConnection {
    /// Why a connection could not be made, in a few words (`connection refused`, `cannot resolve
    /// the host`), not NIO's description of every attempt.
    static func reason(connecting error: any Error) -> String {
        guard let error = error as? NIOConnectionError else { return "\(error)" }
        guard let failure = error.connectionErrors.first else {
            return error.dnsAError != nil || error.dnsAAAAError != nil ? "cannot resolve the host" : "no address to connect to"
        }
        if let error = failure.error as? IOError {
            return String(cString: strerror(error.errnoCode)).lowercased()
        }
        return "\(failure.error)"
    }
}
