import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import TestSupport
import Testing

@testable import Relay

/// A WebSocket server the conformance suite runs against: where to connect, and what it answers.
///
/// A target answers every complete text message `{"type":"ping"}` with the text frame
/// `{"type":"pong"}`, and any other text or binary message with a text frame whose JSON `type`
/// is `error` (as the relay does). It may also send frames of its own (a greeting, events,
/// heartbeat pings): ``isUnsolicited(_:)`` tells them from answers.
protocol ConformanceTarget: Sendable {
    var port: Int { get }
    /// The path of the WebSocket endpoint, e.g. `/ws`.
    var path: String { get }
    /// The query string to connect with (without `?`), e.g. a token; nil: none.
    var query: String? { get }
    /// The largest message the target accepts, in bytes.
    var maxMessageBytes: Int { get }
    /// Whether `frame` was sent by the server on its own rather than as an answer.
    func isUnsolicited(_ frame: RawWebSocket.Frame) -> Bool
    /// The `type` of the text frame the server sends first, before it serves any frame; nil: none.
    var greeting: String? { get }
}

extension ConformanceTarget {
    var maxMessageBytes: Int { 64 * 1024 }
    var greeting: String? { nil }

    /// Server pings, and text frames that are neither a `pong` nor an `error`.
    func isUnsolicited(_ frame: RawWebSocket.Frame) -> Bool {
        switch frame.opcode {
        case 0x9: true
        case 0x1: !["pong", "error"].contains(frame.jsonType ?? "")
        default: false
        }
    }
}

/// The targets the suite runs against, each started (and stopped) around one test.
enum ConformanceTargetKind: String, CaseIterable, Sendable, CustomStringConvertible {
    /// A small NIO server with the relay's WebSocket layer (``WebSocketUpgrader``,
    /// ``WebSocketProtocolHandler``) and an application handler that answers as the relay does.
    case reference
    /// The relay itself (in process, on the suite's Redis), with a valid token.
    case relay

    var description: String { self.rawValue }

    func withTarget<T: Sendable>(_ body: (any ConformanceTarget) async throws -> T) async throws -> T {
        switch self {
        case .reference:
            let server = try await ConformanceReferenceServer.start()
            do {
                let result = try await body(server)
                try await server.stop()
                return result
            } catch {
                try? await server.stop()
                throw error
            }
        case .relay:
            var result: T?
            try await withRelay { relay in
                let token = relay.token(TestRedis.uniqueName("conformance"))
                result = try await body(RelayConformanceTarget(port: relay.port, query: "token=\(token)"))
            }
            return try #require(result)
        }
    }
}

/// The relay as a conformance target: `/ws` with a token; its `hello` and pings are unsolicited.
struct RelayConformanceTarget: ConformanceTarget {
    let port: Int
    let path = "/ws"
    let query: String?
    let greeting: String? = "hello"
}

/// The reference target: on 127.0.0.1, a port of the kernel's choice, path `/ws`.
/// Its pipeline after the upgrade is the relay's: the frame decoder (64 KiB frames),
/// ``WebSocketProtocolHandler`` (64 KiB messages), then ``ConformanceReferenceApp``.
final class ConformanceReferenceServer: ConformanceTarget {
    let port: Int
    let path = "/ws"
    let query: String? = nil
    private let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
        self.port = channel.localAddress?.port ?? 0
    }

    static func start() async throws -> ConformanceReferenceServer {
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let upgrader = WebSocketUpgrader<Void>(
                        maxFrameSize: 64 * 1024,
                        shouldUpgrade: { channel, head in
                            channel.eventLoop.makeSucceededFuture(head.uri.split(separator: "?").first == "/ws" ? HTTPHeaders() : nil)
                        },
                        upgradePipelineHandler: { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandlers([
                                    WebSocketProtocolHandler(maxMessageBytes: 64 * 1024),
                                    ConformanceReferenceApp(),
                                ])
                            }
                        }
                    )
                    var configuration = NIOUpgradableHTTPServerPipelineConfiguration(
                        upgradeConfiguration: NIOTypedHTTPServerUpgradeConfiguration<Void>(
                            upgraders: [upgrader],
                            notUpgradingCompletionHandler: { channel in
                                channel.eventLoop.makeCompletedFuture {
                                    try channel.pipeline.syncOperations.addHandler(NotFoundHandler())
                                }
                            }
                        )
                    )
                    // As the relay's: no HTTP pipelining or error handlers left around the upgrade.
                    configuration.enablePipelining = false
                    configuration.enableErrorHandling = false
                    _ = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
                }
            }
        let channel = try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
        return ConformanceReferenceServer(channel: channel)
    }

    func stop() async throws {
        try await self.channel.close()
    }
}

/// Answers as the relay does: `{"type":"ping"}` with `{"type":"pong"}`, anything else with a
/// `bad_request` error.
final class ConformanceReferenceApp: ChannelInboundHandler {
    typealias InboundIn = WebSocketInboundMessage
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let answer: String
        switch Self.unwrapInboundIn(data) {
        case .text(let text) where text.readableBytesView.elementsEqual(#"{"type":"ping"}"#.utf8):
            answer = #"{"type":"pong"}"#
        case .text, .binary:
            answer = #"{"type":"error","code":"bad_request"}"#
        }
        context.writeAndFlush(Self.wrapOutboundOut(WebSocketWire.text(answer, allocator: context.channel.allocator)), promise: nil)
    }
}

/// Answers a plain HTTP request (not a WebSocket handshake) with 404, then closes the
/// connection. A refused handshake is answered by ``WebSocketUpgrader`` itself: of its request,
/// only the `.end` reaches this handler (NIO's upgrade handler keeps the head), and is ignored.
final class NotFoundHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private var sawHead = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head: self.sawHead = true
        case .body: break
        case .end: if self.sawHead { self.answer(context: context) }
        }
    }

    private func answer(context: ChannelHandlerContext) {
        let headers: HTTPHeaders = ["Content-Length": "0", "Connection": "close"]
        context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .notFound, headers: headers))), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
