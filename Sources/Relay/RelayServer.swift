import Hummingbird
import Logging
import NIOCore
import NIOEmbedded
import NIOPosix
import NIOWebSocket
import RedisClient
import ServiceLifecycle
import UnixSignals

/// Builds the relay: its routes, and the Redis services they need.
public enum RelayServer {
    /// The relay as a Hummingbird application: a `Service` that runs until graceful shutdown
    /// (SIGTERM/SIGINT under `runService()`) or cancellation.
    ///
    /// - Throws: ``RelayConfigurationError`` for a configuration it cannot use (a bad Redis URL).
    public static func makeApplication(
        configuration: RelayConfiguration,
        logger: Logger = Logger(label: "relay"),
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
    ) throws -> some ApplicationProtocol {
        let metrics = RelayMetrics()
        return try self.makeApplication(
            configuration: configuration,
            logger: logger,
            metrics: metrics,
            connections: LiveConnections(metrics: metrics),
            onServerRunning: onServerRunning
        )
    }

    static func makeApplication(
        configuration: RelayConfiguration,
        logger: Logger,
        metrics: RelayMetrics,
        connections: LiveConnections,
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
    ) throws -> some ApplicationProtocol {
        var redisConfiguration: RedisConfiguration
        do {
            redisConfiguration = try RedisConfiguration(url: configuration.redisURL)
            // A connection per event loop: a socket's script goes out on its own loop's.
            redisConfiguration.poolSize = max(redisConfiguration.poolSize, System.coreCount)
            redisConfiguration.replicaWait = configuration.redisWait
            redisConfiguration.replicaWaitTimeout = configuration.redisWaitTimeout
        } catch {
            throw RelayConfigurationError(message: RedisURL.redacting(error.message, of: configuration.redisURL))
        }
        let redis = RedisClient(configuration: redisConfiguration, logger: logger)
        let store = ChatStore(redis: redis, limits: configuration.limits, metrics: metrics, retention: configuration.retention)
        let parsing = RequestParsing(limits: configuration.limits)
        let signer = HS256(secret: configuration.jwtSecret)

        let router = Router(context: RelayRequestContext.self, options: .autoGenerateHeadEndpoints)
        // Any web page may call the API with a token it holds (tokens are bearer tokens, never
        // cookies, so a page gets no one else's rights by it): preflights are answered here,
        // before routing, and every answer to a request with an `Origin` allows it.
        router.add(
            middleware: CORSMiddleware(
                allowOrigin: .all,
                allowHeaders: [.accept, .authorization, .contentType, .origin],
                allowMethods: [.get, .head, .post, .patch, .delete, .options],
                maxAge: .seconds(600)
            )
        )
        router.add(middleware: ErrorMiddleware(metrics: metrics))
        SystemRoutes(
            redis: redis,
            metrics: metrics,
            parsing: parsing,
            signer: signer,
            devMode: configuration.devMode,
            connections: connections
        ).register(on: router)
        WebRoutes().register(on: router)
        let limiter = configuration.limits.writesPerSecond > 0 ? RateLimiter(perSecond: configuration.limits.writesPerSecond) : nil
        var api = router.group().add(middleware: AuthMiddleware(verifier: signer))
        if let limiter { api = api.add(middleware: RateLimitMiddleware(limiter: limiter)) }
        ChannelRoutes(store: store, parsing: parsing, realtime: RealtimeNotifier(redis: redis)).register(on: api)
        let messages = MessageRoutes(store: store, parsing: parsing)
        messages.register(on: api)
        PresenceRoutes(store: store, parsing: parsing).register(on: api)

        let hub = FanoutHub(
            subscriber: RedisSubscriber(configuration: redisConfiguration, logger: logger),
            logger: logger,
            metrics: metrics
        )
        let presence = PresenceKeeper(redis: redis, heartbeat: configuration.heartbeat, logger: logger)
        let services = LiveServices(
            store: store,
            hub: hub,
            presence: presence,
            connections: connections,
            heartbeats: Heartbeats(interval: configuration.heartbeat),
            limits: configuration.limits,
            metrics: metrics,
            maxQueuedBytes: configuration.limits.maxQueuedBytes,
            rateLimiter: limiter
        )
        try self.checkWebSocketPipeline(services)

        return Application(
            router: router,
            server: .relay(services: services, verifier: AuthMiddleware(verifier: signer)),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "relay"),
            services: [redis, hub, presence],
            onServerRunning: onServerRunning,
            logger: logger
        )
    }

    /// Lays out a WebSocket pipeline on an embedded channel, as an upgrade does, and checks it:
    /// a relay whose handlers would not see the frames they expect must not start.
    static func checkWebSocketPipeline(_ services: LiveServices) throws {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        do {
            try channel.pipeline.syncOperations.addHandler(
                WebSocketFrameReader(maxFrameSize: services.limits.maxBodyBytes),
                name: PipelineLayoutError.expected[0]
            )
            try RelayWebSocket.configure(channel, identity: nil, services: services)
        } catch {
            throw RelayConfigurationError(message: "\(error)")
        }
    }

    /// Runs the relay until SIGTERM or SIGINT, then stops: every WebSocket is closed with 1001
    /// (going away, so that clients resume on another relay), REST goes on being served for
    /// `configuration.drain` (with `/healthz` at 503), then the server stops accepting, finishes
    /// its requests, and the Redis services end.
    ///
    /// The relay closes its WebSockets itself before the graceful shutdown starts: under a
    /// graceful shutdown the WebSocket library closes them with 1000, which would tell a client
    /// that the conversation is over rather than that this relay is.
    public static func run(configuration: RelayConfiguration, logger: Logger) async throws {
        let metrics = RelayMetrics()
        let connections = LiveConnections(metrics: metrics)
        let app = try self.makeApplication(configuration: configuration, logger: logger, metrics: metrics, connections: connections)
        let group = ServiceGroup(
            configuration: .init(services: [app], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
        )
        enum Finished { case services, signalHandled }
        try await withThrowingTaskGroup(of: Finished.self) { tasks in
            tasks.addTask {
                do {
                    try await group.run()
                } catch is SocketAddressError.UnknownHost {
                    throw RelayConfigurationError(message: "--host \(configuration.host): no such host or address to listen on")
                } catch let error as SocketAddressError {
                    throw RelayConfigurationError(message: "--host \(configuration.host): not an address to listen on (\(error))")
                } catch let error as IOError where [EADDRINUSE, EADDRNOTAVAIL, EACCES].contains(error.errnoCode) {
                    // Only the listening socket's bind fails this way, before anything is served.
                    throw RelayConfigurationError(
                        message:
                            "cannot listen on \(configuration.host):\(configuration.port) (--host, --port): \(String(cString: strerror(error.errnoCode)))"
                    )
                }
                return .services
            }
            tasks.addTask {
                await withTaskGroup(of: Void.self) { drain in
                    var signals = await UnixSignalsSequence(trapping: .sigterm, .sigint).makeAsyncIterator()
                    guard let signal = await signals.next() else { return }
                    logger.info("Stopping", metadata: ["signal": "\(signal)", "websockets": "\(connections.count)"])
                    // Draining from now on: /healthz answers 503 and upgrades are refused, so that
                    // a load balancer sends no one new; every socket is told to go elsewhere, and
                    // REST is served until the balancer has had the time to notice.
                    let deadline = ContinuousClock.now + configuration.drain
                    connections.closeAll(code: 1001, reason: "server going away")
                    drain.addTask {
                        await connections.waitUntilEmpty(timeout: .seconds(3))
                        try? await Task.sleep(until: deadline)
                        await group.triggerGracefulShutdown()
                    }
                    // A second signal cuts the drain short; none comes once the services have
                    // ended and this task is cancelled.
                    if let signal = await signals.next() {
                        logger.info("Stopping now", metadata: ["signal": "\(signal)"])
                        drain.cancelAll()
                    }
                }
                return .signalHandled
            }
            // The signal task ends first on a normal stop; the services then finish their graceful
            // shutdown, which must not be cut short.
            while let finished = try await tasks.next() {
                if finished == .services {
                    tasks.cancelAll()
                    return
                }
            }
        }
    }

    /// Checks that Redis answers at `url` (at one of its URLs, for a list: the first that
    /// answers), once, within `timeout`, and that it will not evict a channel's keys (a
    /// `maxmemory` with an `allkeys-*` policy could drop a channel's seq or log under memory pressure).
    ///
    /// A Redis Cluster that does not serve every slot yet (`cluster_state` other than `ok`) is
    /// not refused: the relay rides it out, and says so on `logger`.
    ///
    /// - Throws: ``RelayConfigurationError`` saying why not, in one line, with no password.
    public static func checkRedis(url: String, timeout: Duration = .seconds(3), logger: Logger? = nil) async throws {
        let shown = RedisURL.redacting(url, of: url)
        var configuration: RedisConfiguration
        do {
            configuration = try RedisConfiguration(url: url)
        } catch {
            throw RelayConfigurationError(message: "--redis: \(RedisURL.redacting(error.message, of: url))")
        }
        configuration.connectTimeout = timeout
        configuration.commandTimeout = timeout
        let severalSeeds = configuration.seeds.count > 1
        let info: String
        do {
            var answer: (info: String, failure: (any Error)?) = ("", nil)
            // The list's every URL, the first one first.
            for seed in configuration.seeds {
                var node = configuration
                node.host = seed.host
                node.port = seed.port
                do {
                    let connection = try await RedisConnection.connect(
                        configuration: node,
                        eventLoop: MultiThreadedEventLoopGroup.singleton.any()
                    )
                    defer { connection.close() }
                    _ = try await connection.execute(RedisCommand("PING"))
                    // A Redis that does not answer INFO (a renamed command) is not refused for it.
                    answer = ((try? await connection.execute(RedisCommand("INFO", ["memory"])))?.string ?? "", nil)
                    // Several URLs are a cluster's seeds: a single Redis among them would be used
                    // alone, and relays given the list in another order would part ways.
                    if severalSeeds, let cluster = (try? await connection.execute(RedisCommand("INFO", ["cluster"])))?.string,
                        !cluster.contains("cluster_enabled:1")
                    {
                        throw RelayConfigurationError(
                            message: "--redis lists several URLs, the seeds of a Redis Cluster, but redis://\(seed.host):\(seed.port)"
                                + " is not a cluster node (cluster_enabled:0): give a single Redis one URL"
                        )
                    }
                    if let logger, let cluster = (try? await connection.execute(RedisCommand("CLUSTER", ["INFO"])))?.string,
                        !cluster.contains("cluster_state:ok")
                    {
                        logger.warning(
                            "the Redis Cluster does not serve every slot (cluster_state is not ok): requests are answered 503, and /healthz says 503, until it does",
                            metadata: ["redis": "\(seed.host):\(seed.port)"]
                        )
                    }
                    break
                } catch let error as RelayConfigurationError {
                    throw error
                } catch {
                    answer.failure = answer.failure ?? error
                }
            }
            if let failure = answer.failure { throw failure }
            info = answer.info
        } catch let error as RelayConfigurationError {
            throw error
        } catch {
            let reason = (error as? RedisError)?.message ?? "\(error)"
            throw RelayConfigurationError(message: "Redis at \(shown) is unreachable: \(RedisURL.redacting(reason, of: url))")
        }
        var fields: [Substring: Substring] = [:]
        for line in info.split(whereSeparator: \.isNewline) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon]] = line[line.index(after: colon)...]
        }
        let maxMemory = fields["maxmemory"].flatMap { Int64($0) } ?? 0
        let policy = fields["maxmemory_policy"].map(String.init) ?? "noeviction"
        if maxMemory > 0 && policy.hasPrefix("allkeys-") {
            throw RelayConfigurationError(
                message: "Redis at \(shown) may evict a channel's keys: maxmemory-policy is \(policy) with maxmemory \(maxMemory);"
                    + " set maxmemory-policy to noeviction (or a volatile-* policy)"
            )
        }
    }
}

/// Redis URLs as the relay shows them: never with their password.
enum RedisURL {
    /// `text` with the password of `url` (`redis://[user]:password@…`, or a comma-separated
    /// list of them), and each URL itself, shown as `***`. A URL malformed before its `@`
    /// (`redis:/:password@…`) has its user info found after the last `/` before it.
    static func redacting(_ text: String, of url: String) -> String {
        var result = text
        for one in url.split(separator: ",") {
            guard let at = one.lastIndex(of: "@") else { continue }
            let beforeAt = one[..<at]
            let start =
                beforeAt.firstRange(of: "://")?.upperBound ?? beforeAt.lastIndex(of: "/").map(beforeAt.index(after:)) ?? beforeAt.startIndex
            let userInfo = one[start..<at]
            let password = userInfo.firstIndex(of: ":").map { userInfo[userInfo.index(after: $0)...] } ?? userInfo
            let shownUserInfo = userInfo.contains(":") ? userInfo.prefix { $0 != ":" } + ":***" : "***"
            let redactedURL = String(one[..<start]) + shownUserInfo + String(one[at...])
            result = result.replacing(one, with: redactedURL)
            if !password.isEmpty { result = result.replacing(password, with: "***") }
        }
        return result
    }
}

/// A configuration the relay cannot start with.
public struct RelayConfigurationError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { self.message }
}
