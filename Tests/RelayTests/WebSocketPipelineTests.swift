import Logging
import NIOCore
import NIOEmbedded
import NIOWebSocket
import RedisClient
import TestSupport
import Testing

@testable import Relay

/// The WebSocket pipeline the upgrade leaves behind is the one the relay's handlers were written
/// for: frame reader → heartbeat → RFC 6455 → connection, and no other handler that takes
/// outbound data (the relay writes its frames, already encoded, straight to the channel). The
/// relay checks this at start-up; these tests pin the check.
@Suite("WebSocket pipeline layout")
struct WebSocketPipelineTests {
    func services() throws -> LiveServices {
        let redisConfiguration = try RedisConfiguration(url: TestRedis.url)
        let redis = RedisClient(configuration: redisConfiguration)
        let metrics = RelayMetrics()
        return LiveServices(
            store: ChatStore(redis: redis, limits: RelayLimits(), metrics: metrics),
            hub: FanoutHub(subscriber: RedisSubscriber(configuration: redisConfiguration), logger: Logger(label: "test")),
            presence: PresenceKeeper(redis: redis, heartbeat: .seconds(30), logger: Logger(label: "test")),
            connections: LiveConnections(metrics: metrics),
            heartbeats: Heartbeats(interval: .seconds(30)),
            limits: RelayLimits(),
            metrics: metrics,
            maxQueuedBytes: 1 << 20
        )
    }

    @Test func theUpgradeLeavesTheExpectedLayout() throws {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        try channel.pipeline.syncOperations.addHandler(
            WebSocketFrameReader(maxFrameSize: 1 << 16),
            name: PipelineLayoutError.expected[0]
        )
        try RelayWebSocket.configure(channel, identity: nil, services: self.services())
        #expect(PipelineLayoutError.names(channel.pipeline.debugDescription) == PipelineLayoutError.expected)
        try RelayServer.checkWebSocketPipeline(self.services())
    }

    @Test func aFrameEncoderOrAnotherOrderIsRefused() throws {
        let withEncoder = EmbeddedChannel()
        defer { _ = try? withEncoder.finish() }
        try withEncoder.pipeline.syncOperations.addHandler(WebSocketFrameEncoder())
        try withEncoder.pipeline.syncOperations.addHandler(
            WebSocketFrameReader(maxFrameSize: 1 << 16),
            name: PipelineLayoutError.expected[0]
        )
        #expect(throws: PipelineLayoutError.self) { try RelayWebSocket.configure(withEncoder, identity: nil, services: self.services()) }

        // Anything before the reader that takes outbound data would be gone past: the relay
        // writes its frames straight to the channel.
        let withOutbound = EmbeddedChannel()
        defer { _ = try? withOutbound.finish() }
        try withOutbound.pipeline.syncOperations.addHandler(OutboundPassThrough(), name: "http.encoder")
        try withOutbound.pipeline.syncOperations.addHandler(
            WebSocketFrameReader(maxFrameSize: 1 << 16),
            name: PipelineLayoutError.expected[0]
        )
        #expect {
            try RelayWebSocket.configure(withOutbound, identity: nil, services: self.services())
        } throws: { error in
            "\(error)".contains("[\"http.encoder\"]")
        }

        let withoutDecoder = EmbeddedChannel()
        defer { _ = try? withoutDecoder.finish() }
        #expect(throws: PipelineLayoutError.self) { try RelayWebSocket.configure(withoutDecoder, identity: nil, services: self.services()) }
    }
}

/// An outbound handler that passes on what it is given.
private final class OutboundPassThrough: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
}
