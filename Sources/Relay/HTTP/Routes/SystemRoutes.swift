import Hummingbird
import RedisClient

/// Routes without a token: health, metrics, dev tokens.
struct SystemRoutes: Sendable {
    let redis: RedisClient
    let metrics: RelayMetrics
    let parsing: RequestParsing
    let signer: HS256
    let devMode: Bool
    /// The relay's WebSockets: while they drain (the relay is stopping), `/healthz` says 503.
    let connections: LiveConnections

    func register(on router: some RouterMethods<RelayRequestContext>) {
        router.get("/healthz", use: self.health)
        router.get("/metrics", use: self.renderMetrics)
        router.post("/auth/dev-token", use: self.devToken)
    }

    @Sendable func health(_ request: Request, context: RelayRequestContext) async throws -> Response {
        guard !self.connections.isDraining else {
            throw APIError(.unavailable, "this relay is stopping")
        }
        // A Redis that does not answer within the bound is as good as down: a load balancer's
        // check hears so in time, not after the command timeout.
        let answered = await withTaskGroup(of: Bool.self) { group in
            group.addTask { await self.redisServes() }
            group.addTask {
                try? await Task.sleep(for: Self.healthBound)
                return false
            }
            defer { group.cancelAll() }
            return await group.next() ?? false
        }
        guard answered else { throw APIError(.unavailable, "Redis does not answer") }
        return .json("{\"status\":\"ok\"}")
    }

    /// Whether Redis answers; on a cluster, whether it also serves every slot (`cluster_state:ok`
    /// in `CLUSTER INFO`): a cluster short of a shard answers `PING` but refuses every command
    /// on a key (`CLUSTERDOWN`), so a relay on it can serve nothing.
    private func redisServes() async -> Bool {
        guard self.redis.isCluster else { return (try? await self.redis.ping()) != nil }
        guard let info = try? await self.redis.execute(RedisCommand("CLUSTER", ["INFO"])).string else { return false }
        return info.contains("cluster_state:ok")
    }

    /// How long `/healthz` waits for Redis's answer.
    static let healthBound = Duration.seconds(2)

    @Sendable func renderMetrics(_ request: Request, context: RelayRequestContext) async throws -> Response {
        Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: self.metrics.render()))
        )
    }

    struct DevTokenRequest: Decodable {
        var user_id: String
        var session_id: String?
    }

    /// Dev mode only: a token for anyone, valid for a day.
    @Sendable func devToken(_ request: Request, context: RelayRequestContext) async throws -> Response {
        guard self.devMode else { throw APIError(.notFound, "not found") }
        let body = try await self.parsing.decode(DevTokenRequest.self, from: request)
        let user = try self.parsing.id(body.user_id, field: "user_id")
        let session = try self.parsing.id(body.session_id ?? JWTClaims.defaultSessionID, field: "session_id")
        let token = self.signer.sign(JWTClaims(userID: user, sessionID: session, expiresAt: Clock.seconds() + 86_400))
        return .json("{\"token\":\"\(token)\",\"user_id\":\"\(user)\",\"session_id\":\"\(session)\"}")
    }
}

/// `GET /presence?user_ids=a,b`.
struct PresenceRoutes: Sendable {
    let store: ChatStore
    let parsing: RequestParsing

    func register(on router: some RouterMethods<RelayRequestContext>) {
        router.get("/presence", use: self.presence)
    }

    @Sendable func presence(_ request: Request, context: RelayRequestContext) async throws -> Response {
        _ = try context.caller()
        guard let list = try self.parsing.query("user_ids", in: request), !list.isEmpty else {
            throw APIError.badRequest("user_ids is required: a comma-separated list of user ids")
        }
        var users = [String]()
        var seen = Set<String>()
        for item in list.split(separator: ",", omittingEmptySubsequences: false) {
            let user = try self.parsing.id(String(item), field: "user_ids")
            if seen.insert(user).inserted { users.append(user) }
        }
        guard users.count <= self.parsing.limits.maxPresenceUsers else {
            throw APIError.badRequest("at most \(self.parsing.limits.maxPresenceUsers) user_ids")
        }
        let online = try await self.store.presence(of: users)
        let entries = zip(users, online).map { "\"\($0)\":\"\($1 ? "online" : "offline")\"" }
        return .json("{\"presence\":{" + entries.joined(separator: ",") + "}}")
    }
}
