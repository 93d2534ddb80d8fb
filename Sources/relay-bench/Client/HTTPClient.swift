import DequeModule
import NIOCore
import NIOHTTP1
import NIOPosix

/// A response as the benchmark needs it: the status and the whole body.
struct HTTPResponse: Sendable {
    var status: Int
    var body: ByteBuffer
    var text: String { String(buffer: self.body) }
}

/// One HTTP/1.1 keep-alive connection. Requests may be pipelined: they are written at once and
/// answered in order, each completion called on the connection's event loop.
final class HTTPClient: @unchecked Sendable {
    let channel: any Channel
    let host: String
    let port: Int
    private let handler: HTTPResponseHandler

    private init(channel: any Channel, host: String, port: Int, handler: HTTPResponseHandler) {
        self.channel = channel
        self.host = host
        self.port = port
        self.handler = handler
    }

    var eventLoop: any EventLoop { self.channel.eventLoop }

    static func connect(group: any EventLoopGroup, host: String, port: Int) async throws -> HTTPClient {
        let handler = HTTPResponseHandler()
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: host, port: port)
            .get()
        return HTTPClient(channel: channel, host: host, port: port, handler: handler)
    }

    /// Writes a request; `completion` gets the response, or nil if the connection closed first.
    /// Call on any thread; the completion runs on the connection's event loop.
    func send(
        _ method: HTTPMethod,
        _ path: String,
        body: ByteBuffer? = nil,
        headers: [(String, String)] = [],
        completion: @escaping (HTTPResponse?) -> Void
    ) {
        let request = PendingRequest(method: method, path: path, body: body, headers: headers, completion: completion)
        if self.eventLoop.inEventLoop {
            self.write(request)
        } else {
            self.eventLoop.execute { self.write(request) }
        }
    }

    /// One request, awaited.
    ///
    /// - Throws: when the connection closes before the response.
    func request(
        _ method: HTTPMethod,
        _ path: String,
        body: String? = nil,
        headers: [(String, String)] = []
    ) async throws -> HTTPResponse {
        let promise = self.eventLoop.makePromise(of: HTTPResponse.self)
        let failure = BenchError("\(self.host):\(self.port) closed the connection during \(method) \(path)")
        self.send(method, path, body: body.map { ByteBuffer(string: $0) }, headers: headers) { response in
            if let response {
                promise.succeed(response)
            } else {
                promise.fail(failure)
            }
        }
        return try await promise.futureResult.get()
    }

    func close() {
        self.channel.close(promise: nil)
    }

    private func write(_ request: PendingRequest) {
        guard self.channel.isActive else {
            request.completion(nil)
            return
        }
        var head = HTTPRequestHead(version: .http1_1, method: request.method, uri: request.path)
        head.headers.add(name: "Host", value: "\(self.host):\(self.port)")
        head.headers.add(name: "Content-Length", value: "\(request.body?.readableBytes ?? 0)")
        for (name, value) in request.headers { head.headers.add(name: name, value: value) }
        self.handler.enqueue(request.completion)
        self.channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body = request.body { self.channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil) }
        self.channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
    }
}

/// A request on its way to the connection's event loop.
private final class PendingRequest: @unchecked Sendable {
    let method: HTTPMethod
    let path: String
    let body: ByteBuffer?
    let headers: [(String, String)]
    let completion: (HTTPResponse?) -> Void

    init(method: HTTPMethod, path: String, body: ByteBuffer?, headers: [(String, String)], completion: @escaping (HTTPResponse?) -> Void) {
        self.method = method
        self.path = path
        self.body = body
        self.headers = headers
        self.completion = completion
    }
}

/// Collects each response and hands it to the oldest waiting completion.
private final class HTTPResponseHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart

    private var waiting: Deque<(HTTPResponse?) -> Void> = []
    private var status = 0
    private var body = ByteBuffer()

    func enqueue(_ completion: @escaping (HTTPResponse?) -> Void) {
        self.waiting.append(completion)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.status = Int(head.status.code)
            self.body.clear()
        case .body(var part):
            self.body.writeBuffer(&part)
        case .end:
            guard let completion = self.waiting.popFirst() else { return }
            completion(HTTPResponse(status: self.status, body: self.body))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let pending = self.waiting
        self.waiting = []
        for completion in pending { completion(nil) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
