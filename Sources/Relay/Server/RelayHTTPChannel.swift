import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// The relay's connections: HTTP/1.1 for the API, upgraded to a WebSocket on `GET /ws`.
///
/// An upgraded connection is handed to its channel handlers and needs no task: ``handle(value:logger:)``
/// returns at once for it. Only HTTP connections are served by a task, Hummingbird's.
struct RelayHTTPChannel: ServerChildChannel, HTTPChannelHandler {
    enum UpgradeResult: Sendable {
        case webSocket
        case notUpgraded(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        /// A WebSocket handshake that was refused; the request itself is gone (NIO does not pass
        /// it on), so the answer is written from its head.
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, HTTPRequestHead)
    }

    struct Value: ServerChildChannelValue {
        let upgradeResult: EventLoopFuture<UpgradeResult>
        let channel: any Channel
    }

    /// The upgrader's refusal: the HTTP side answers the request instead.
    struct NotUpgraded: Error {}

    /// The sizes of a connection's receive buffers: from 1 KiB, growing up to 64 KiB while
    /// reads fill them.
    static let receiveBuffers = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 1024, maximum: 65536)

    let responder: HTTPChannelHandler.Responder
    let upgrader: WebSocketUpgrader<UpgradeResult>
    let connections: LiveConnections
    let http1: HTTP1Channel.Configuration
    let limits: RelayLimits

    init(
        responder: @escaping HTTPChannelHandler.Responder,
        services: LiveServices,
        verifier: AuthMiddleware,
        http1: HTTP1Channel.Configuration = .init()
    ) {
        self.upgrader = RelayWebSocket.upgrader(verifier: verifier, services: services)
        self.connections = services.connections
        var http1 = http1
        http1.idleTimeout = http1.idleTimeout ?? TimeAmount(services.limits.httpIdleTimeout)
        self.http1 = http1
        self.limits = services.limits
        self.responder = { request, writer, channel in
            guard request.uri.path == RelayWebSocket.path else {
                try await responder(request, writer, channel)
                return
            }
            try await Self.refuseUpgrade(request, writer: writer, draining: services.connections.isDraining)
        }
    }

    /// A request for `/ws` that asked for no upgrade, or asked on a connection that served a
    /// request before (only a connection's first request is upgraded): say how to get one.
    static func refuseUpgrade(_ request: Request, writer: consuming ResponseWriter, draining: Bool) async throws {
        let asked = request.headers[values: .upgrade].contains { $0.lowercased().contains("websocket") }
        let message =
            asked
            ? "a WebSocket handshake is upgraded only as the first request of its connection: open a new connection for it"
            : "GET /ws is a WebSocket: upgrade to it"
        let (head, body) =
            draining
            ? Self.refusal(.serviceUnavailable, APIError(.unavailable, "this relay is stopping: connect again"))
            : Self.refusal(.upgradeRequired, APIError(.badRequest, message), [.upgrade: "websocket"])
        var bodyWriter = try await writer.writeHead(head)
        try await bodyWriter.write(body)
        try await bodyWriter.finish(nil)
    }

    /// A refusal's response head and body: `error` as the API writes it, and the connection closed.
    /// Like every answer of the API, it allows pages of any origin to read it (CORS).
    static func refusal(_ status: HTTPResponse.Status, _ error: APIError, _ extra: HTTPFields = [:]) -> (HTTPResponse, ByteBuffer) {
        let body = ByteBuffer(string: error.json)
        var fields: HTTPFields = [
            .connection: "close", .contentType: "application/json; charset=utf-8", .accessControlAllowOrigin: "*",
        ]
        fields.append(contentsOf: extra)
        fields[.contentLength] = "\(body.readableBytes)"
        return (HTTPResponse(status: status, headerFields: fields), body)
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // NIO keeps a channel's largest receive buffer for its later reads, for as long as
            // the channel lives: with its default first size (2 KiB), a quarter of an idle
            // WebSocket's memory. A handshake fits in 1 KiB; larger reads still grow the buffer.
            try channel.syncOptions?.setOption(.recvAllocator, value: Self.receiveBuffers)
            let http1 = self.http1
            let limits = self.limits
            let attempted = NIOLoopBoundBox<HTTPRequestHead?>(nil, eventLoop: channel.eventLoop)
            let closer = NIOLoopBound(HTTPParseErrorHandler(), eventLoop: channel.eventLoop)
            let configuration = NIOTypedHTTPServerUpgradeConfiguration<UpgradeResult>(
                upgraders: [AttemptRecordingUpgrader(upgrader: self.upgrader, attempted: attempted, parseErrorCloser: closer)],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let pipeline = channel.pipeline.syncOperations
                        try pipeline.addHandler(HTTP1ConnectionRulesHandler(limits: limits))
                        try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try pipeline.addHandlers(http1.additionalChannelHandlers())
                        try pipeline.addHandler(
                            HTTPConnectionStateHandler(idleTimeout: http1.idleTimeout.map { .init($0) }, logger: logger)
                        )
                        let asyncChannel = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(isOutboundHalfClosureEnabled: true)
                        )
                        if let head = attempted.value {
                            return .refused(asyncChannel, head)
                        }
                        return .notUpgraded(asyncChannel)
                    }
                }
            )
            var pipelineConfiguration = NIOUpgradableHTTPServerPipelineConfiguration(upgradeConfiguration: configuration)
            pipelineConfiguration.enablePipelining = false
            // A request HTTP/1.1 cannot parse is answered by HTTPParseErrorHandler, after the
            // requests before it: NIO's handler answers at once, ahead of their answers.
            pipelineConfiguration.enableErrorHandling = false
            pipelineConfiguration.enableResponseHeaderValidation = false
            pipelineConfiguration.decoderConfiguration.maxHeaderFieldSize = http1.httpDecoder.maxHeaderFieldSize
            pipelineConfiguration.decoderConfiguration.maxHeaderListSize = http1.httpDecoder.maxHeaderListSize
            pipelineConfiguration.decoderConfiguration.maxHeaderFieldCount = http1.httpDecoder.maxHeaderFieldCount
            let result = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: pipelineConfiguration)
            let upgradeHandler = try channel.pipeline.syncOperations.handler(type: NIOTypedHTTPServerUpgradeHandler<UpgradeResult>.self)
            try channel.pipeline.syncOperations.addHandler(closer.value, position: .before(upgradeHandler))
            try channel.pipeline.syncOperations.addHandler(UnknownUpgradeFilter(), position: .before(upgradeHandler))
            // The first request's head must arrive within the idle timeout; after it, the HTTP
            // side's idle timeout or the WebSocket's heartbeat takes over.
            if let timeout = http1.idleTimeout {
                let deadline = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
                result.whenComplete { _ in deadline.cancel() }
            }
            return Value(upgradeResult: result, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.upgradeResult.get() {
            case .webSocket:
                // The channel's handlers serve it from here on; no task waits for it.
                return
            case .notUpgraded(let http1):
                await self.handleHTTP(asyncChannel: http1, logger: logger)
            case .refused(let http1, let head):
                await self.refuse(head, on: http1)
            }
        } catch {
            // A request that could not be parsed (already answered 400), or a connection that
            // ended or timed out before its first request: nothing more to serve.
            logger.debug("connection ended before its first request", metadata: ["error": "\(error)"])
            value.channel.close(promise: nil)
        }
    }
}

extension RelayHTTPChannel {
    /// Answers a refused WebSocket handshake, then closes: 400 without one key, 426 (with
    /// `Sec-WebSocket-Version: 13`) for another version, 503 while draining, 404 elsewhere than `/ws`.
    func refuse(_ head: HTTPRequestHead, on channel: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>) async {
        let response: (HTTPResponse, ByteBuffer)
        if let (refusal, headers) = WebSocketUpgrader<UpgradeResult>.refusal(of: head) {
            let status = HTTPResponse.Status(code: Int(refusal.code))
            var extra: HTTPFields = [:]
            for header in headers {
                if let name = HTTPField.Name(header.name) { extra[name] = header.value }
            }
            let message =
                status == .badRequest
                ? "a WebSocket handshake needs one Sec-WebSocket-Key: 16 bytes in base64" : "only WebSocket version 13 is spoken here"
            response = Self.refusal(status, APIError(.badRequest, message), extra)
        } else if self.connections.isDraining {
            response = Self.refusal(.serviceUnavailable, APIError(.unavailable, "this relay is stopping: connect again"))
        } else if URI(head.uri).path != RelayWebSocket.path {
            response = Self.refusal(.notFound, APIError(.notFound, "no WebSocket here: GET /ws"))
        } else {
            response = Self.refusal(.badRequest, APIError(.badRequest, "not a valid WebSocket handshake"))
        }
        try? await channel.executeThenClose { _, outbound in
            try await outbound.write(contentsOf: [.head(response.0), .body(response.1), .end(nil)])
        }
    }
}

/// Notes the head of every handshake its upgrader is asked about, so that a refused one can be
/// answered (NIO drops the request of a failed upgrade).
///
/// A handshake's request was parsed: it takes the ``HTTPParseErrorHandler`` out of the pipeline,
/// which a WebSocket's does not have.
struct AttemptRecordingUpgrader<UpgradeResult: Sendable>: NIOTypedHTTPServerProtocolUpgrader, Sendable {
    let upgrader: WebSocketUpgrader<UpgradeResult>
    let attempted: NIOLoopBoundBox<HTTPRequestHead?>
    let parseErrorCloser: NIOLoopBound<HTTPParseErrorHandler>

    var supportedProtocol: String { self.upgrader.supportedProtocol }
    var requiredUpgradeHeaders: [String] { self.upgrader.requiredUpgradeHeaders }

    func buildUpgradeResponse(
        channel: any Channel,
        upgradeRequest: HTTPRequestHead,
        initialResponseHeaders: HTTPHeaders
    )
        -> EventLoopFuture<HTTPHeaders>
    {
        self.attempted.value = upgradeRequest
        channel.pipeline.syncOperations.removeHandler(self.parseErrorCloser.value, promise: nil)
        return self.upgrader.buildUpgradeResponse(
            channel: channel,
            upgradeRequest: upgradeRequest,
            initialResponseHeaders: initialResponseHeaders
        )
    }

    func upgrade(channel: any Channel, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<UpgradeResult> {
        self.upgrader.upgrade(channel: channel, upgradeRequest: upgradeRequest)
    }
}

/// What HTTP/1.x asks of a server about a request's body and its connection, which the handlers
/// after it cannot see (the HTTP types they speak carry no version, and Hummingbird reads a
/// refused body to its end before the next request):
/// - `Expect: 100-continue` is answered `100 Continue` as soon as the head arrives (RFC 9110
///   section 10.1.1), so that a client waiting for it sends its body at once rather than after a
///   timeout of its own. A body announced over the limit gets no `100`, nor does a request
///   without a body or an HTTP/1.0 one (which knows no interim answer).
/// - The connection ends once the answer is written, and the answer says so
///   (`Connection: close`), when the request announced a body over the limit (refused 413
///   unread, ``RelayLimits/announcesTooLargeBody(_:)``: rather than read and drop all it
///   announced, a gigabyte say), asked for it (`Connection: close`), or is HTTP/1.0 without
///   `Connection: keep-alive` (RFC 9112 section 9.3); an HTTP/1.0 one with it is told
///   `Connection: keep-alive`.
final class HTTP1ConnectionRulesHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// How the connection goes on after the answer to a request.
    private enum After {
        case keepAlive
        /// HTTP/1.0 with `Connection: keep-alive`: its answer must say so.
        case keepAliveAsked
        case close
    }

    private let limits: RelayLimits
    /// One per request read and not yet answered, in order.
    private var pending = CircularBuffer<After>()
    /// A `CONNECT` was refused: the connection is closing, and what follows is dropped.
    private var refusedTunnel = false

    init(limits: RelayLimits) {
        self.limits = limits
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.refusedTunnel else { return }
        if case .head(let head) = Self.unwrapInboundIn(data) {
            if head.method == .CONNECT {
                self.refuseTunnel(context: context, version: head.version)
                return
            }
            let tooLarge = self.limits.isTooLargeBody(contentLength: head.headers["Content-Length"].first)
            let http10 = head.version.major == 1 && head.version.minor == 0
            if tooLarge || !head.isKeepAlive {
                self.pending.append(.close)
            } else {
                self.pending.append(http10 ? .keepAliveAsked : .keepAlive)
            }
            if !tooLarge, !http10, Self.expectsContinue(head) {
                let response = HTTPResponseHead(version: head.version, status: .continue)
                context.writeAndFlush(Self.wrapOutboundOut(.head(response)), promise: nil)
            }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch Self.unwrapOutboundIn(data) {
        case .head(var head) where !(100..<200).contains(head.status.code) || head.status == .switchingProtocols:
            switch self.pending.first {
            case .close: head.headers.replaceOrAdd(name: "Connection", value: "close")
            case .keepAliveAsked: head.headers.replaceOrAdd(name: "Connection", value: "keep-alive")
            case .keepAlive, nil: break
            }
            context.write(Self.wrapOutboundOut(.head(head)), promise: promise)
        case .end:
            guard case .close = self.pending.popFirst() else {
                context.write(data, promise: promise)
                return
            }
            let written = context.eventLoop.makePromise(of: Void.self)
            written.futureResult.whenComplete { _ in context.close(promise: nil) }
            if let promise { written.futureResult.cascade(to: promise) }
            context.write(data, promise: written)
        case .head, .body:
            context.write(data, promise: promise)
        }
    }

    /// A `CONNECT` request asks for a tunnel: what follows its head is not HTTP. It is answered
    /// 400 (NIO's encoder drops the body of any answer to a `CONNECT`), and the connection
    /// closed; nothing after it is read.
    private func refuseTunnel(context: ChannelHandlerContext, version: HTTPVersion) {
        self.refusedTunnel = true
        let body = ByteBuffer(string: APIError(.badRequest, "CONNECT is not served here: the relay is no proxy").json)
        let headers: HTTPHeaders = [
            "Content-Type": "application/json; charset=utf-8", "Content-Length": "\(body.readableBytes)", "Connection": "close",
        ]
        context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: version, status: .badRequest, headers: headers))), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
    }

    /// Whether the request asks for `100 Continue` and has a body to send after it.
    private static func expectsContinue(_ head: HTTPRequestHead) -> Bool {
        guard head.headers["Expect"].contains(where: { $0.lowercased() == "100-continue" }) else { return false }
        if let length = head.headers["Content-Length"].first { return length != "0" }
        return head.headers["Transfer-Encoding"].contains { $0.lowercased().contains("chunked") }
    }
}

/// Takes an `Upgrade` header that names no protocol the relay speaks (`h2c`, which `curl --http2`
/// sends on every `http://` request; `TLS/1.2`) off the connection's first request, so that the
/// request is served as if it had none (RFC 9110 section 7.8: a server may ignore an upgrade it
/// does not support). NIO's upgrade handler, given such a request, would drop its head and leave
/// it unanswered. Only the first request can be an upgrade: the filter leaves after it.
final class UnknownUpgradeFilter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = Self.unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        // NIO's upgrade handler looks each token up as it is, in lower case: `websocket/13` is
        // no protocol it knows.
        let protocols = head.headers[canonicalForm: "upgrade"]
        if !protocols.isEmpty, !protocols.contains(where: { $0.lowercased() == "websocket" }) {
            head.headers.remove(name: "Upgrade")
        }
        context.fireChannelRead(Self.wrapInboundOut(.head(head)))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Answers a request HTTP/1.1 cannot parse (a bad method, version or length, headers over the
/// limit) with `400 Bad Request` and closes the connection, in its place among the answers: a
/// client that pipelined good requests before it gets their answers first (NIO's own handler
/// answered at once, ahead of them, and the connection closed on them). Bytes after it are
/// dropped. A request that fails midway (a bad chunk) is answered at once, as before, and its
/// error goes on to the handler reading its body.
final class HTTPParseErrorHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Requests read whose answer has not ended yet.
    private var unanswered = 0
    /// A request's head was read, and not yet its end.
    private var readingRequest = false
    /// An answer's head went out, and not yet its end.
    private var answering = false
    /// A parse error came: nothing more is read, and the 400 is due (or written).
    private var failed = false
    /// The 400 was written: nothing goes out after it (the handler of a request that failed
    /// midway may still try to answer it).
    private var refused = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.failed else { return }
        switch Self.unwrapInboundIn(data) {
        case .head:
            self.unanswered += 1
            self.readingRequest = true
        case .end:
            self.readingRequest = false
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let parseError = error is HTTPParserError
        if case ByteToMessageDecoderError.dataReceivedInErrorState = error, self.failed { return }
        guard parseError, !self.failed else {
            context.fireErrorCaught(error)
            return
        }
        self.failed = true
        if self.readingRequest {
            // The request being read cannot end: it fails, and is answered now if nothing is.
            if !self.answering { self.refuse(context: context) } else { context.close(promise: nil) }
            context.fireErrorCaught(error)
        } else if self.unanswered == 0 {
            self.refuse(context: context)
        }
        // Otherwise the answers under way go out first (``write(context:data:promise:)``).
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !self.refused else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        switch Self.unwrapOutboundIn(data) {
        case .head(let head) where head.status.code >= 200 || head.status == .switchingProtocols:
            self.answering = true
            context.write(data, promise: promise)
        case .head, .body:
            context.write(data, promise: promise)
        case .end:
            self.answering = false
            self.unanswered = max(0, self.unanswered - 1)
            context.write(data, promise: promise)
            if self.failed, self.unanswered == 0 { self.refuse(context: context) }
        }
    }

    /// Writes the 400 and closes the connection once it is out.
    private func refuse(context: ChannelHandlerContext) {
        guard !self.refused else { return }
        self.refused = true
        let head = HTTPResponseHead(version: .http1_1, status: .badRequest, headers: ["Connection": "close", "Content-Length": "0"])
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 with the relay's own WebSocket upgrade on `GET /ws`.
    static func relay(services: LiveServices, verifier: AuthMiddleware) -> HTTPServerBuilder {
        .init { responder in
            RelayHTTPChannel(responder: responder, services: services, verifier: verifier)
        }
    }
}
