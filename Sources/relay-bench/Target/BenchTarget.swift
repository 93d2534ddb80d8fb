import Foundation
import Histogram
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// The server under test and the load generator's event loops: setup calls (users, tokens,
/// channels), sockets, and the meters of each loop.
final class BenchTarget: Sendable {
    let kind: TargetKind
    let endpoint: Endpoint
    let group: MultiThreadedEventLoopGroup
    let loops: [any EventLoop]
    /// One meter per event loop, in the order of `loops`.
    let meters: [LoopMeter]
    let ackMeters: [LoopMeter]
    /// Prefixes every user and channel id of this run, so runs on one Redis never collide.
    let run: String
    private let signer: JWTSigner?
    private let setup: [HTTPClient]
    private let nextSetup = Atomic<Int>(0)
    let connectConcurrency: Int

    private init(options: TargetOptions, group: MultiThreadedEventLoopGroup, setup: [HTTPClient]) {
        self.kind = options.target
        self.endpoint = Endpoint(url: options.url)!
        self.group = group
        self.loops = Array(group.makeIterator())
        self.meters = self.loops.map { _ in LoopMeter() }
        self.ackMeters = self.loops.map { _ in LoopMeter() }
        self.run = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        self.signer = options.jwtSecret.map(JWTSigner.init(secret:))
        self.setup = setup
        self.connectConcurrency = max(1, options.connectConcurrency)
    }

    /// Runs `body` against the target of `options`, and shuts the load generator's side down
    /// afterwards, whether `body` returned or threw.
    static func with<T>(_ options: TargetOptions, _ body: (BenchTarget) async throws -> T) async throws -> T {
        let target = try await Self.start(options)
        do {
            let result = try await body(target)
            await target.shutdown()
            return result
        } catch {
            await target.shutdown()
            throw error
        }
    }

    private static func start(_ options: TargetOptions) async throws -> BenchTarget {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
        let endpoint = Endpoint(url: options.url)!
        var setup: [HTTPClient] = []
        do {
            for _ in 0..<8 { setup.append(try await HTTPClient.connect(group: group, host: endpoint.host, port: endpoint.port)) }
        } catch {
            try? await group.shutdownGracefully()
            throw BenchError("cannot reach \(options.url): \(error)")
        }
        return BenchTarget(options: options, group: group, setup: setup)
    }

    private func shutdown() async {
        for client in self.setup { client.close() }
        try? await self.group.shutdownGracefully()
    }

    /// The meter of the event loop that socket number `index` is spread onto.
    func meter(forSocket index: Int) -> LoopMeter {
        self.meters[index % self.loops.count]
    }

    func meter(for loop: any EventLoop) -> LoopMeter {
        self.meters[self.loops.firstIndex { $0 === loop } ?? 0]
    }

    func ackMeter(for loop: any EventLoop) -> LoopMeter {
        self.ackMeters[self.loops.firstIndex { $0 === loop } ?? 0]
    }

    /// Reads the meters on their loops and clears them.
    func collect(_ meters: [LoopMeter]) async throws -> (count: Int, latency: LatencySummary, last: UInt64) {
        var histograms: [Histogram<UInt64>] = []
        var count = 0
        var last: UInt64 = 0
        for (loop, meter) in zip(self.loops, meters) {
            let (histogram, deliveries, lastAt) = try await loop.submit {
                let result = (meter.latency, meter.deliveries, meter.lastDeliveryAt)
                meter.latency.reset()
                meter.deliveries = 0
                return result
            }.get()
            histograms.append(histogram)
            count += deliveries
            last = max(last, lastAt)
        }
        return (count, LatencySummary(histograms), last)
    }

    // MARK: Setup over REST

    /// A user id of this run.
    func user(_ role: String, _ index: Int) -> String { "\(self.run)-\(role)\(index)" }

    func token(user: String) async throws -> String {
        if let signer { return signer.token(user: user) }
        let response = try await self.call(.POST, "/auth/dev-token", token: nil, body: #"{"user_id":"\#(user)"}"#)
        guard let token = Self.field("token", in: response.text) else {
            throw BenchError(
                "POST /auth/dev-token: no token in \(response.text.prefix(200)) (run the relay with --dev, or pass --jwt-secret)"
            )
        }
        return token
    }

    func tokens(users: [String]) async throws -> [String] {
        try await self.concurrentMap(users.count, width: 16) { try await self.token(user: users[$0]) }
    }

    /// One REST call on a setup connection; a non-2xx status is an error.
    @discardableResult
    func call(_ method: HTTPMethod, _ path: String, token: String?, body: String? = nil) async throws -> HTTPResponse {
        let client = self.setup[self.nextSetup.add(1, ordering: .relaxed).oldValue % self.setup.count]
        var headers = [("Content-Type", "application/json")]
        if let token { headers.append(("Authorization", "Bearer \(token)")) }
        let response = try await client.request(method, path, body: body, headers: headers)
        guard (200..<300).contains(response.status) else {
            throw BenchError("\(method) \(path): \(response.status) \(response.text.prefix(300))")
        }
        return response
    }

    /// A group channel owned by `owner` with `members` (added in batches of 1,000).
    func createGroup(owner: String, ownerToken: String, members: [String]) async throws -> String {
        let response = try await self.call(.POST, "/channels", token: ownerToken, body: #"{"type":"group","members":[],"name":"bench"}"#)
        guard let id = Self.field("id", in: response.text) else { throw BenchError("POST /channels: no id in \(response.text)") }
        var start = 0
        while start < members.count {
            let batch = members[start..<min(start + 1000, members.count)]
            let list = batch.map { "\"\($0)\"" }.joined(separator: ",")
            try await self.call(.POST, "/channels/\(id)/members", token: ownerToken, body: #"{"user_ids":[\#(list)]}"#)
            start += 1000
        }
        return id
    }

    func createDM(token: String, peer: String) async throws -> String {
        let response = try await self.call(.POST, "/channels", token: token, body: #"{"type":"dm","members":["\#(peer)"]}"#)
        guard let id = Self.field("id", in: response.text) else { throw BenchError("POST /channels: no id in \(response.text)") }
        return id
    }

    /// nchan's count of subscribers on `channel` (its publisher location answers GET with it).
    func nchanSubscribers(channel: String) async throws -> Int {
        let client = self.setup[0]
        let response = try await client.request(.GET, "/pub/\(channel)", headers: [("Accept", "text/json")])
        guard response.status == 200 else { return 0 }
        return Self.field("subscribers", in: response.text).flatMap { Int($0) } ?? 0
    }

    /// A top-level string or number field of a JSON object (enough for the setup answers).
    static func field(_ name: String, in json: String) -> String? {
        guard let range = json.range(of: "\"\(name)\":") else { return nil }
        var rest = json[range.upperBound...].drop { $0 == " " }
        if rest.first == "\"" {
            rest = rest.dropFirst()
            return String(rest.prefix { $0 != "\"" })
        }
        return String(rest.prefix { $0 != "," && $0 != "}" && $0 != " " })
    }

    // MARK: Sockets

    /// Opens `count` WebSockets, `connectConcurrency` at a time, spread over the event loops.
    /// `make` gives each socket's path, upgrade headers and sink, knowing its loop.
    func connect(
        count: Int,
        _ make: @escaping @Sendable (Int, any EventLoop) -> (path: String, headers: [(String, String)], sink: any WebSocketSink)
    ) async throws -> [WebSocketClient] {
        let loops = self.loops
        let endpoint = self.endpoint
        return try await self.concurrentMap(count, width: self.connectConcurrency) { index in
            let loop = loops[index % loops.count]
            let spec = UncheckedBox(make(index, loop))
            var attempt = 0
            while true {
                do {
                    return try await WebSocketClient.connect(
                        group: loop,
                        host: endpoint.host,
                        port: endpoint.port,
                        path: spec.value.path,
                        headers: spec.value.headers,
                        index: index,
                        sink: spec.value.sink
                    )
                } catch {
                    // A listen backlog overflowing under a burst of connects: back off and retry, a few times.
                    attempt += 1
                    if attempt >= 5 { throw error }
                    try await Task.sleep(for: .milliseconds(200 * attempt))
                }
            }
        }
    }

    /// `work(0..<count)`, at most `width` at a time, results in index order.
    func concurrentMap<T: Sendable>(_ count: Int, width: Int, _ work: @escaping @Sendable (Int) async throws -> T) async throws -> [T] {
        var results = [T?](repeating: nil, count: count)
        try await withThrowingTaskGroup(of: (Int, T).self) { group in
            var next = 0
            while next < min(width, count) {
                let index = next
                group.addTask { (index, try await work(index)) }
                next += 1
            }
            while let (index, value) = try await group.next() {
                results[index] = value
                if next < count {
                    let index = next
                    group.addTask { (index, try await work(index)) }
                    next += 1
                }
            }
        }
        return results.map { $0! }
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
func waitUntil(timeout: Duration, _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}
