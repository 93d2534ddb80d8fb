import NIOCore
import NIOHTTP1
import NIOWebSocket

/// The WebSocket upgrade for the relay's pipeline: NIO's `NIOTypedWebSocketServerUpgrader`
/// checks the handshake and builds the 101 response, but its `upgrade` adds NIO's
/// `WebSocketFrameEncoder`, which cannot be removed from a pipeline (it is not a
/// `RemovableChannelHandler`) and cannot carry the ready-made frames (`ByteBuffer`s) the
/// relay writes. This upgrader adds only the frame reader, then runs `upgradePipelineHandler`,
/// which adds the rest (``WebSocketProtocolHandler`` and the connection's handlers).
///
/// A refused handshake (no `Sec-WebSocket-Key`, a version other than 13, `shouldUpgrade`
/// answering nil) is not upgraded. NIO's upgrade handler then drops the request (no handler after
/// it sees its head), so the caller notes the head in its own upgrader wrapper and answers it
/// from its `notUpgradingCompletionHandler`; ``refusal(of:)`` says what a malformed one gets
/// (``RelayHTTPChannel`` does this).
struct WebSocketUpgrader<UpgradeResult: Sendable>: NIOTypedHTTPServerProtocolUpgrader, Sendable {
    let supportedProtocol = "websocket"
    let requiredUpgradeHeaders: [String] = []

    /// The name of the frame reader (``WebSocketFrameReader``) in the pipeline.
    static var decoderName: String { "ws.decoder" }

    private let handshake: NIOTypedWebSocketServerUpgrader<UpgradeResult>
    private let maxFrameSize: Int
    private let upgradePipelineHandler: @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<UpgradeResult>

    /// - Parameters:
    ///   - maxFrameSize: the largest frame the reader accepts; a larger one reaches
    ///     ``WebSocketProtocolHandler`` as `NIOWebSocketError.invalidFrameLength` (1009).
    ///   - shouldUpgrade: the extra headers of the 101 response, or nil to refuse the upgrade.
    ///   - upgradePipelineHandler: called once the reader is in the pipeline (named
    ///     ``decoderName``), after the 101 was written; adds the handlers after it.
    init(
        maxFrameSize: Int = 64 * 1024,
        shouldUpgrade: @escaping @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<HTTPHeaders?>,
        upgradePipelineHandler: @escaping @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<UpgradeResult>
    ) {
        self.maxFrameSize = maxFrameSize
        self.upgradePipelineHandler = upgradePipelineHandler
        // Only its handshake checks are used: its pipeline handler never runs.
        self.handshake = NIOTypedWebSocketServerUpgrader(
            maxFrameSize: maxFrameSize,
            enableAutomaticErrorHandling: false,
            shouldUpgrade: shouldUpgrade,
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeFailedFuture(ChannelError.inappropriateOperationForState)
            }
        )
    }

    func buildUpgradeResponse(
        channel: any Channel,
        upgradeRequest: HTTPRequestHead,
        initialResponseHeaders: HTTPHeaders
    ) -> EventLoopFuture<HTTPHeaders> {
        guard Self.hasOneValidKey(upgradeRequest.headers), Self.isHandshake(upgradeRequest) else {
            return channel.eventLoop.makeFailedFuture(NIOWebSocketUpgradeError.invalidUpgradeHeader)
        }
        return self.handshake.buildUpgradeResponse(
            channel: channel,
            upgradeRequest: upgradeRequest,
            initialResponseHeaders: initialResponseHeaders
        )
    }

    func upgrade(channel: any Channel, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<UpgradeResult> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(
                WebSocketFrameReader(maxFrameSize: self.maxFrameSize),
                name: Self.decoderName
            )
        }.flatMap {
            self.upgradePipelineHandler(channel, upgradeRequest)
        }
    }

    /// Whether `head` is a handshake as RFC 6455 section 4.2.1 has a client send it: a `GET` of
    /// HTTP/1.1 or later whose `Connection` header asks to upgrade, with no body (what follows
    /// the head is the WebSocket's).
    static func isHandshake(_ head: HTTPRequestHead) -> Bool {
        guard head.method == .GET, head.version.major > 1 || (head.version.major == 1 && head.version.minor >= 1) else { return false }
        guard head.headers[canonicalForm: "connection"].contains(where: { $0.lowercased() == "upgrade" }) else { return false }
        let length = head.headers["Content-Length"]
        return head.headers["Transfer-Encoding"].isEmpty && (length.isEmpty || length == ["0"])
    }

    /// Whether `headers` carry exactly one `Sec-WebSocket-Key`, and it is what RFC 6455 section
    /// 4.1 makes a client send: 16 bytes in base64, that is 22 characters of its alphabet and `==`.
    static func hasOneValidKey(_ headers: HTTPHeaders) -> Bool {
        let keys = headers["Sec-WebSocket-Key"]
        guard keys.count == 1 else { return false }
        let bytes = Array(keys[0].utf8)
        guard bytes.count == 24, bytes[22] == UInt8(ascii: "="), bytes[23] == UInt8(ascii: "=") else { return false }
        return bytes[..<22].allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "+"), UInt8(ascii: "/"):
                true
            default:
                false
            }
        }
    }

    /// What to answer a WebSocket handshake that was not upgraded because it is malformed
    /// (RFC 6455 section 4.2.2): 400 without exactly one valid `Sec-WebSocket-Key`, 426 with
    /// `Sec-WebSocket-Version: 13` for another version. Nil when `head` asks for no WebSocket
    /// upgrade, or asks correctly (then it was refused for another reason: the path, say).
    static func refusal(of head: HTTPRequestHead) -> (status: HTTPResponseStatus, headers: HTTPHeaders)? {
        let upgrade = head.headers[canonicalForm: "upgrade"].map { $0.lowercased() }
        guard upgrade.contains("websocket") else { return nil }
        if !Self.hasOneValidKey(head.headers) {
            return (.badRequest, [:])
        }
        if head.headers["Sec-WebSocket-Version"] != ["13"] {
            return (.upgradeRequired, ["Sec-WebSocket-Version": "13"])
        }
        return nil
    }
}
