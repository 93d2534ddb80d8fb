import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOPosix
import RedisClient

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
        let redisConfiguration: RedisConfiguration
        do {
            redisConfiguration = try RedisConfiguration(url: configuration.redisURL)
        } catch {
            throw RelayConfigurationError(message: error.message)
        }
        let redis = RedisClient(configuration: redisConfiguration, logger: logger)
        let metrics = RelayMetrics()
        let store = ChatStore(redis: redis, limits: configuration.limits, metrics: metrics)
        let parsing = RequestParsing(limits: configuration.limits)
        let signer = HS256(secret: configuration.jwtSecret)

        let router = Router(context: RelayRequestContext.self)
        router.add(middleware: ErrorMiddleware(metrics: metrics))
        SystemRoutes(redis: redis, metrics: metrics, parsing: parsing, signer: signer, devMode: configuration.devMode)
            .register(on: router)
        WebRoutes().register(on: router)
        let api = router.group().add(middleware: AuthMiddleware(verifier: signer))
        ChannelRoutes(store: store, parsing: parsing, realtime: RealtimeNotifier(redis: redis)).register(on: api)
        let messages = MessageRoutes(store: store, parsing: parsing)
        messages.register(on: api)
        PresenceRoutes(store: store, parsing: parsing).register(on: api)

        let hub = FanoutHub(subscriber: RedisSubscriber(configuration: redisConfiguration, logger: logger), logger: logger)
        let webSocketRouter = Router(context: RelayWebSocketContext.self)
        WebSocketRoute(
            store: store,
            hub: hub,
            messages: messages,
            verifier: AuthMiddleware(verifier: signer),
            heartbeat: configuration.heartbeat,
            maxQueued: configuration.limits.maxQueuedEvents
        ).register(on: webSocketRouter)

        return Application(
            router: router,
            server: .http1WebSocketUpgrade(
                webSocketRouter: webSocketRouter,
                configuration: .init(
                    ws: WebSocketServerConfiguration(
                        maxFrameSize: configuration.limits.maxBodyBytes,
                        autoPing: .enabled(timePeriod: configuration.heartbeat)
                    )
                )
            ),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "relay"),
            services: [redis, hub],
            onServerRunning: onServerRunning,
            logger: logger
        )
    }

    /// Runs the relay until SIGTERM or SIGINT, which stop it accepting, close its connections
    /// and return.
    public static func run(configuration: RelayConfiguration, logger: Logger) async throws {
        let app = try self.makeApplication(configuration: configuration, logger: logger)
        try await app.runService()
    }

    /// Checks that Redis answers at `url`, once, within `timeout`.
    ///
    /// - Throws: ``RelayConfigurationError`` saying why not, in one line.
    public static func checkRedis(url: String, timeout: Duration = .seconds(3)) async throws {
        do {
            var configuration = try RedisConfiguration(url: url)
            configuration.connectTimeout = timeout
            configuration.commandTimeout = timeout
            let connection = try await RedisConnection.connect(
                configuration: configuration,
                eventLoop: MultiThreadedEventLoopGroup.singleton.any()
            )
            defer { connection.close() }
            _ = try await connection.execute(RedisCommand("PING"))
        } catch {
            let reason = (error as? RedisError)?.message ?? "\(error)"
            throw RelayConfigurationError(message: "Redis at \(url) is unreachable: \(reason)")
        }
    }
}

/// A configuration the relay cannot start with.
public struct RelayConfigurationError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { self.message }
}
