import Hummingbird
import HummingbirdWebSocket
import NIOCore
import NIOWebSocket
import Synchronization

/// `GET /ws`: the live connection.
struct WebSocketRoute: Sendable {
    let store: ChatStore
    let hub: FanoutHub
    let presence: PresenceKeeper
    let messages: MessageRoutes
    let verifier: AuthMiddleware
    let heartbeats: Heartbeats
    /// Events a connection may have queued and not yet written before it counts as too slow.
    let maxQueued: Int
    let connections: LiveConnections

    func register(on router: Router<RelayWebSocketContext>) {
        router.ws("/ws") { _, _ in
            // A bad token still upgrades: browsers cannot read an HTTP 401 on a WebSocket, so
            // the answer is a close code (4001) they can read.
            .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            context.requestContext.releaseWebSocketReference()
            let claims: JWTClaims
            do {
                claims = try self.verifier.verify(Self.token(from: context.request) ?? "")
            } catch {
                try? await outbound.close(.unknown(4001), reason: (error as? APIError)?.message ?? "invalid token")
                return
            }
            let connection = LiveConnection(
                user: claims.userID,
                session: claims.sessionID,
                channel: context.requestContext.channel,
                store: self.store,
                hub: self.hub,
                presence: self.presence,
                messages: self.messages,
                maxQueued: self.maxQueued
            )
            guard self.connections.add(connection) else {
                try? await outbound.close(.goingAway, reason: "server going away")
                return
            }
            defer { self.connections.remove(connection) }
            await connection.run(inbound: inbound, outbound: outbound, heartbeats: self.heartbeats, expiresAt: claims.expiresAt)
        }
    }

    /// The token from `Authorization: Bearer …`, or from `?token=` (browsers cannot set headers on a WebSocket).
    static func token(from request: Request) -> String? {
        if let header = request.headers[.authorization], header.count > 7, header.prefix(7).lowercased() == "bearer " {
            return String(header.dropFirst(7))
        }
        return request.uri.queryParameters["token"].map(String.init)
    }
}

/// The context of a WebSocket upgrade; it keeps the connection's channel, so that the relay can
/// write to it from the channel's event loop and cut off a client too slow to read.
struct RelayWebSocketContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel
    private let reference: WebSocketReferenceBox

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
        self.reference = WebSocketReferenceBox()
    }

    var webSocket: WebSocketHandlerReference<Self> {
        self.reference.value.withLock { $0 } ?? WebSocketHandlerReference()
    }

    /// Breaks the reference cycle the WebSocket router leaves behind: its handler reference holds
    /// a copy of this context, which holds the reference. Left in place, every upgraded socket's
    /// context, and with it the channel, would never be freed. Call it once the handler runs.
    func releaseWebSocketReference() {
        self.reference.value.withLock { $0 = nil }
    }
}

/// Holds a context's `WebSocketHandlerReference` so that it can be let go of.
final class WebSocketReferenceBox: Sendable {
    let value = Mutex<WebSocketHandlerReference<RelayWebSocketContext>?>(WebSocketHandlerReference())
}
