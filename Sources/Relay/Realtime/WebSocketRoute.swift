import Hummingbird
import HummingbirdWebSocket
import NIOCore
import NIOWebSocket

/// `GET /ws`: the live connection.
struct WebSocketRoute: Sendable {
    let store: ChatStore
    let hub: FanoutHub
    let presence: PresenceKeeper
    let messages: MessageRoutes
    let verifier: AuthMiddleware
    let heartbeat: Duration
    /// Events a connection may have queued and not yet written before it counts as too slow.
    let maxQueued: Int
    let connections: LiveConnections

    func register(on router: Router<RelayWebSocketContext>) {
        router.ws("/ws") { _, _ in
            // A bad token still upgrades: browsers cannot read an HTTP 401 on a WebSocket, so
            // the answer is a close code (4001) they can read.
            .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
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
            await connection.run(inbound: inbound, outbound: outbound, heartbeat: self.heartbeat, expiresAt: claims.expiresAt)
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

/// The context of a WebSocket upgrade; it keeps the connection's channel, so that a client too
/// slow to read can be cut off even while a write to it is waiting.
struct RelayWebSocketContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    let webSocket: WebSocketHandlerReference<Self>
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.webSocket = .init()
        self.channel = source.channel
    }
}
