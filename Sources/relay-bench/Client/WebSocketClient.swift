import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// A minimal WebSocket client on a NIO channel: one handler, no tasks, so that one process
/// holds thousands of them on a couple of event loops.
///
/// A socket's state is touched only on its event loop; `send` may be called from anywhere.
final class WebSocketClient: @unchecked Sendable {
    let channel: any Channel
    /// Index of the socket in its scenario (the user it stands for).
    let index: Int
    private(set) var closeCode: UInt16?
    private(set) var isClosed = false

    fileprivate init(channel: any Channel, index: Int) {
        self.channel = channel
        self.index = index
    }

    var eventLoop: any EventLoop { self.channel.eventLoop }

    /// Sends one text frame (masked, as a client must).
    func send(_ text: ByteBuffer) {
        let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: text)
        self.channel.writeAndFlush(frame, promise: nil)
    }

    func send(_ text: String) {
        self.send(self.channel.allocator.buffer(string: text))
    }

    /// Closes the TCP connection at once (no close handshake: the benchmark is over).
    func close() {
        self.channel.close(promise: nil)
    }

    fileprivate func markClosed(code: UInt16?) {
        if code != nil { self.closeCode = code }
        self.isClosed = true
    }

    /// Opens a WebSocket to `host:port` at `path`, with `headers` on the upgrade request.
    ///
    /// - Throws: when the TCP connection fails or the server does not upgrade.
    static func connect(
        group: any EventLoopGroup,
        host: String,
        port: Int,
        path: String,
        headers: [(String, String)] = [],
        index: Int,
        sink: any WebSocketSink
    ) async throws -> WebSocketClient {
        let upgraded: EventLoopFuture<WebSocketClient?> = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let socket = WebSocketClient(channel: channel, index: index)
                    let upgrader = NIOTypedWebSocketClientUpgrader<WebSocketClient?>(
                        maxFrameSize: 1 << 20,
                        upgradePipelineHandler: { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                let handler = WebSocketFrameHandler(socket: socket, sink: sink)
                                try channel.pipeline.syncOperations.addHandler(handler)
                                return socket
                            }
                        }
                    )
                    var requestHeaders = HTTPHeaders()
                    requestHeaders.add(name: "Host", value: "\(host):\(port)")
                    requestHeaders.add(name: "Content-Length", value: "0")
                    for (name, value) in headers { requestHeaders.add(name: name, value: value) }
                    let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: requestHeaders)
                    let configuration = NIOTypedHTTPClientUpgradeConfiguration<WebSocketClient?>(
                        upgradeRequestHead: head,
                        upgraders: [upgrader],
                        notUpgradingCompletionHandler: { channel in
                            channel.close(promise: nil)
                            return channel.eventLoop.makeSucceededFuture(nil)
                        }
                    )
                    // Bytes right behind the 101 (the relay's hello) must reach the WebSocket decoder.
                    var pipeline = NIOUpgradableHTTPClientPipelineConfiguration(upgradeConfiguration: configuration)
                    pipeline.leftOverBytesStrategy = .forwardBytes
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(configuration: pipeline)
                }
            }
        guard let socket = try await upgraded.get() else {
            throw BenchError("\(host):\(port)\(path.prefix(while: { $0 != "?" })) did not upgrade to a WebSocket")
        }
        return socket
    }
}

/// Turns frames into `WebSocketSink` calls; answers pings; reassembles fragmented messages.
private final class WebSocketFrameHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let socket: WebSocketClient
    private let sink: any WebSocketSink
    private var fragments: ByteBuffer?
    private var reported = false

    init(socket: WebSocketClient, sink: any WebSocketSink) {
        self.socket = socket
        self.sink = sink
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary:
            if frame.fin {
                self.sink.received(frame.unmaskedData, on: self.socket)
            } else {
                self.fragments = frame.unmaskedData
            }
        case .continuation:
            guard var buffer = self.fragments else { return }
            var data = frame.unmaskedData
            buffer.writeBuffer(&data)
            if frame.fin {
                self.fragments = nil
                self.sink.received(buffer, on: self.socket)
            } else {
                self.fragments = buffer
            }
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
            context.writeAndFlush(Self.wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            var data = frame.unmaskedData
            self.report(code: data.readInteger(as: UInt16.self) ?? 1005)
            context.close(promise: nil)
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.report(code: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func report(code: UInt16?) {
        guard !self.reported else { return }
        self.reported = true
        self.socket.markClosed(code: code)
        self.sink.closed(self.socket, code: code)
    }
}
