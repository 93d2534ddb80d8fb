/// Everything `relay serve` can be told. Every field has a default except the secret.
///
/// `relay serve` checks every number against its range before it builds one, so that nothing
/// overflows later (`Serve.limitRanges` in the executable).
public struct RelayConfiguration: Sendable {
    public var host: String = "127.0.0.1"
    public var port: Int = 8080
    /// One Redis URL, or a comma-separated list: the seeds of a Redis Cluster.
    public var redisURL: String = "redis://127.0.0.1:6379"
    /// Replicas that must hold a write before it is acknowledged (Redis `WAIT`); 0 for none.
    public var redisWait: Int = 0
    /// How long to wait for them; past it the write is answered `unavailable`.
    public var redisWaitTimeout: Duration = .milliseconds(1000)
    /// The HS256 secret tokens are signed with.
    public var jwtSecret: [UInt8]
    /// Dev mode: `POST /auth/dev-token` exists.
    public var devMode: Bool = false
    /// How often the server pings each WebSocket; a socket silent for two intervals is closed.
    public var heartbeat: Duration = .seconds(30)
    /// After SIGTERM or SIGINT: how long the relay goes on serving REST, with `/healthz` at 503
    /// and upgrades refused, so that a load balancer notices before it stops accepting.
    public var drain: Duration = .seconds(3)
    public var limits = RelayLimits()
    /// How long each channel's log keeps its events (by default: forever).
    public var retention = RelayRetention()

    public init(jwtSecret: [UInt8]) {
        self.jwtSecret = jwtSecret
    }
}

/// Limits enforced on every request. Over a limit is a 400 or 413, never a crash.
public struct RelayLimits: Sendable {
    /// A message's text, in UTF-8 bytes.
    public var maxTextBytes = 16 * 1024
    /// A request body or a WebSocket frame, in bytes.
    public var maxBodyBytes = 64 * 1024
    /// Members of one group.
    public var maxGroupMembers = 100_000
    /// User ids in one `POST /channels` or `POST /channels/{id}/members`.
    public var maxMembersPerRequest = 1000
    /// Events per history page, by default and at most.
    public var defaultHistoryLimit = 50
    public var maxHistoryLimit = 200
    /// How long a `client_msg_id` is remembered, for idempotent sends.
    public var dedupWindowSeconds = 86_400
    /// `client_msg_id` length, in UTF-8 bytes.
    public var maxClientMessageIDBytes = 128
    /// User ids in one `GET /presence`.
    public var maxPresenceUsers = 1000
    /// Bytes the relay may owe one WebSocket (events, replays, answers) and not have written
    /// yet; past it the client is too slow and is closed with 4008 (it resumes from its cursor
    /// and loses nothing).
    public var maxQueuedBytes = 1024 * 1024
    /// Writes a user may make a second through one relay (REST `POST`/`PATCH`/`DELETE`,
    /// WebSocket `send` and `read`); 0: no limit. Over it: `rate_limited` (429).
    public var writesPerSecond = 0
    /// How long an HTTP connection may go without a request under way: its first request's head
    /// must arrive within it, and a kept-alive connection with no request is closed after it.
    public var httpIdleTimeout: Duration = .seconds(60)

    public init() {}
}
