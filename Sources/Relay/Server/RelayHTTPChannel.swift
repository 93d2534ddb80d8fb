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
    }

    struct Value: ServerChildChannelValue {
        let upgradeResult: EventLoopFuture<UpgradeResult>
        let channel: any Channel
    }

    /// The upgrader's refusal: the HTTP side answers the request instead.
    struct NotUpgraded: Error {}

    let responder: HTTPChannelHandler.Responder
    let upgrader: WebSocketUpgrader<UpgradeResult>
    let http1: HTTP1Channel.Configuration

    init(
        responder: @escaping HTTPChannelHandler.Responder,
        services: LiveServices,
        verifier: AuthMiddleware,
        http1: HTTP1Channel.Configuration = .init()
    ) {
        self.upgrader = RelayWebSocket.upgrader(verifier: verifier, services: services)
        self.http1 = http1
        self.responder = { request, writer, channel in
            guard request.uri.path == RelayWebSocket.path else {
                try await responder(request, writer, channel)
                return
            }
            try await Self.refuseUpgrade(request, writer: writer, draining: services.connections.isDraining)
        }
    }

    /// A request for `/ws` that was not upgraded: say why, as an HTTP client can read it.
    static func refuseUpgrade(_ request: Request, writer: consuming ResponseWriter, draining: Bool) async throws {
        let status: HTTPResponse.Status
        var headers: HTTPFields = [.connection: "close", .contentType: "application/json; charset=utf-8"]
        let message: String
        if draining {
            status = .serviceUnavailable
            message = "this relay is stopping: connect again"
        } else if request.headers[.upgrade]?.lowercased() != "websocket" {
            status = .upgradeRequired
            headers[.upgrade] = "websocket"
            message = "GET /ws is a WebSocket: upgrade to it"
        } else if request.headers[.secWebSocketVersion] != "13" {
            status = .upgradeRequired
            headers[.secWebSocketVersion] = "13"
            message = "only WebSocket version 13 is spoken here"
        } else {
            status = .badRequest
            message = "not a valid WebSocket handshake (Sec-WebSocket-Key, Connection: Upgrade)"
        }
        let body = ByteBuffer(string: APIError(status == .serviceUnavailable ? .unavailable : .badRequest, message).json)
        headers[.contentLength] = "\(body.readableBytes)"
        var bodyWriter = try await writer.writeHead(HTTPResponse(status: status, headerFields: headers))
        try await bodyWriter.write(body)
        try await bodyWriter.finish(nil)
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let http1 = self.http1
            let configuration = NIOTypedHTTPServerUpgradeConfiguration<UpgradeResult>(
                upgraders: [self.upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let pipeline = channel.pipeline.syncOperations
                        try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try pipeline.addHandlers(http1.additionalChannelHandlers())
                        try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: http1.idleTimeout.map { .init($0) }, logger: logger))
                        let asyncChannel = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(isOutboundHalfClosureEnabled: true)
                        )
                        return .notUpgraded(asyncChannel)
                    }
                }
            )
            var pipelineConfiguration = NIOUpgradableHTTPServerPipelineConfiguration(upgradeConfiguration: configuration)
            pipelineConfiguration.enablePipelining = false
            pipelineConfiguration.enableErrorHandling = false
            pipelineConfiguration.enableResponseHeaderValidation = false
            pipelineConfiguration.decoderConfiguration.maxHeaderFieldSize = http1.httpDecoder.maxHeaderFieldSize
            pipelineConfiguration.decoderConfiguration.maxHeaderListSize = http1.httpDecoder.maxHeaderListSize
            pipelineConfiguration.decoderConfiguration.maxHeaderFieldCount = http1.httpDecoder.maxHeaderFieldCount
            let result = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: pipelineConfiguration)
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
            }
        } catch {
            logger.debug("connection ended before its first request", metadata: ["error": "\(error)"])
        }
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
