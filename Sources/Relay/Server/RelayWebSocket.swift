import Hummingbird
import HummingbirdCore
import NIOCore
import NIOHTTP1
import NIOWebSocket
import Synchronization

/// The WebSocket upgrade of `GET /ws` (RFC 6455 section 4.2), and the pipeline it leaves behind:
///
///     WebSocketFrameReader → HeartbeatHandler → WebSocketProtocolHandler → LiveConnectionHandler
///
/// with no frame encoder: every handler writes whole, already encoded frames (a server's frames
/// are not masked, so an event is encoded once for every socket), and the connection and the
/// heartbeat write theirs past the pipeline, through one ``ChannelOutput`` per socket that sends
/// them to the kernel itself while NIO holds nothing of the socket. A handshake it refuses (no
/// key, a version other than 13, another path, a relay that is draining) is not upgraded, and
/// the HTTP side answers it (``RelayHTTPChannel``).
enum RelayWebSocket {
    static let path = "/ws"
    /// Whether a real socket's pipeline has been checked (``configure(_:identity:services:)``).
    private static let layoutChecked = Atomic<Bool>(false)

    static func upgrader(verifier: AuthMiddleware, services: LiveServices) -> WebSocketUpgrader<RelayHTTPChannel.UpgradeResult> {
        WebSocketUpgrader(
            maxFrameSize: services.limits.maxBodyBytes,
            shouldUpgrade: { channel, head in
                let accepted = !services.connections.isDraining && URI(head.uri).path == Self.path
                return channel.eventLoop.makeSucceededFuture(accepted ? HTTPHeaders() : nil)
            },
            // Refusals are answered on the HTTP side, with the API's error body (RelayHTTPChannel).
            upgradePipelineHandler: { channel, head in
                channel.eventLoop.makeCompletedFuture {
                    var identity: LiveConnectionHandler.Identity?
                    // The close frame's reason says which, as REST's 401 does: a client can tell
                    // a token to renew from one signed wrong.
                    var refusal = "no token: give ?token= or one Authorization: Bearer header"
                    if let token = Self.token(head) {
                        do {
                            let claims = try verifier.verify(token)
                            identity = .init(user: claims.userID, session: claims.sessionID, expiresAt: claims.expiresAt)
                        } catch {
                            refusal = (error as? APIError)?.message ?? "invalid token"
                        }
                    }
                    // The layout is the same for every socket (the start-up check and
                    // WebSocketPipelineTests pin it), and reading it costs as much as the rest of
                    // the upgrade: the first socket of the process is checked.
                    let checkLayout = !Self.layoutChecked.load(ordering: .relaxed)
                    try Self.configure(channel, identity: identity, refusal: refusal, services: services, checkLayout: checkLayout)
                    if checkLayout { Self.layoutChecked.store(true, ordering: .relaxed) }
                    return .webSocket
                }
            }
        )
    }

    /// Adds the WebSocket handlers after the frame reader; a bad token gets a connection that is
    /// closed with 4001 at once (browsers cannot read an HTTP 401 on an upgrade).
    ///
    /// - Throws: ``PipelineLayoutError`` if the pipeline is not laid out as expected (the relay
    ///   checks this at start-up, on an embedded channel).
    /// - Parameters:
    ///   - refusal: the reason of the 4001 close frame when there is no identity.
    ///   - checkLayout: whether to check the pipeline's layout first.
    static func configure(
        _ channel: any Channel,
        identity: LiveConnectionHandler.Identity?,
        refusal: String = "invalid or expired token",
        services: LiveServices,
        checkLayout: Bool = true
    ) throws {
        let pipeline = channel.pipeline.syncOperations
        let names = PipelineLayoutError.expected
        // One output for the handlers that write to the socket, so that a frame sent straight to
        // the kernel never overtakes one that NIO still holds.
        let output = ChannelOutput(channel)
        let heartbeat = HeartbeatHandler(heartbeats: services.heartbeats, output: output)
        try pipeline.addHandler(heartbeat, name: names[1])
        // A close frame behind unread output waits as long as a silent client would be kept.
        let protocolHandler = WebSocketProtocolHandler(
            maxMessageBytes: services.limits.maxBodyBytes,
            drainTimeout: services.heartbeats.interval * 2,
            output: output
        )
        try pipeline.addHandler(protocolHandler, name: names[2])
        // Checked before the connection's handler is added: it writes at once.
        if checkLayout {
            try PipelineLayoutError.check(channel.pipeline, names: names.dropLast())
        }
        // The reader tells the heartbeat of the pongs it keeps; without one, the relay would
        // close every idle client as silent.
        guard let reader = try? pipeline.handler(type: WebSocketFrameReader.self) else {
            throw PipelineLayoutError(description: "WebSocket pipeline has no WebSocketFrameReader")
        }
        reader.heartbeat = heartbeat
        if let identity {
            try pipeline.addHandler(LiveConnectionHandler(identity: identity, services: services, output: output), name: names[3])
        } else {
            try pipeline.addHandler(RefusingHandler(code: 4001, reason: refusal), name: names[3])
        }
    }

    /// The token from `Authorization: Bearer …`, or, without that header, from `?token=` (browsers
    /// cannot set headers on a WebSocket). None from a header that is not one `Bearer <token>`, even
    /// with a good `?token=` (as over REST, the header is what is read), nor from a query that
    /// gives it twice (which one counts would be a guess, as for any query parameter given twice).
    static func token(_ head: HTTPRequestHead) -> String? {
        switch AuthMiddleware.credentials(head.headers["Authorization"]) {
        case .token(let token):
            return String(token)
        case .malformed:
            return nil
        case .none:
            let tokens = URI(head.uri).queryParameters.getAll("token")
            return tokens.count == 1 ? tokens[0] : nil
        }
    }
}

/// The pipeline after an upgrade is not the one the relay's handlers were written for.
struct PipelineLayoutError: Error, CustomStringConvertible {
    var description: String

    /// The names of the WebSocket handlers, in their order at the pipeline's end.
    static let expected = [WebSocketUpgrader<RelayHTTPChannel.UpgradeResult>.decoderName, "ws.heartbeat", "ws.protocol", "ws.connection"]

    /// Checks that the pipeline ends with the relay's WebSocket handlers, in order, and that no
    /// other handler in it takes outbound data: the relay writes its frames, already encoded,
    /// past the pipeline (``ChannelOutput``), past any such handler (a frame encoder would
    /// take them for `WebSocketFrame`s; an HTTP encoder left behind, for HTTP parts).
    /// Call it on the channel's event loop.
    static func check(_ pipeline: ChannelPipeline, names expected: ArraySlice<String> = ArraySlice(PipelineLayoutError.expected)) throws {
        let description = pipeline.debugDescription
        let layout = Self.names(description)
        guard layout.suffix(expected.count) == expected else {
            throw PipelineLayoutError(description: "WebSocket pipeline is \(layout), not one ending in \(Array(expected))")
        }
        let others = Self.names(description, outboundOnly: true).filter { !expected.contains($0) }
        guard others.isEmpty else {
            throw PipelineLayoutError(
                description:
                    "WebSocket pipeline has outbound handlers \(others): the relay's frames would go past them, straight to the socket"
            )
        }
    }

    /// The handler names in a pipeline's description (`[name]` ending each handler's line), in
    /// order; with `outboundOnly`, those of the handlers that take outbound data (a type after the
    /// line's `↓↑`).
    static func names(_ description: String, outboundOnly: Bool = false) -> [String] {
        description.split(separator: "\n").compactMap { line in
            guard line.hasSuffix("]"), !line.contains("[I] ↓↑ [O]"), let open = line.lastIndex(of: "[") else { return nil }
            if outboundOnly {
                guard let arrow = line.firstIndex(of: "↑"), line[line.index(after: arrow)..<open].contains(where: { $0 != " " }) else {
                    return nil
                }
            }
            return String(line[line.index(after: open)..<line.index(before: line.endIndex)])
        }
    }
}

/// The only handler of a WebSocket whose token was refused: closes it with `code`.
final class RefusingHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketInboundMessage

    private let code: UInt16
    private let reason: String

    init(code: UInt16, reason: String) {
        self.code = code
        self.reason = reason
    }

    func handlerAdded(context: ChannelHandlerContext) {
        context.triggerUserOutboundEvent(WebSocketProtocolHandler.Close(code: self.code, reason: self.reason), promise: nil)
        context.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}
