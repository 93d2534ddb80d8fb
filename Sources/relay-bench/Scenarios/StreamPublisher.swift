import DequeModule
import NIOCore
import NIOHTTP1
import Synchronization

/// One stream of messages: numbers them, sends them over a relay socket or as HTTP POSTs, and
/// times their acknowledgements. Touched only on its event loop; `publish` may be called from anywhere.
final class StreamPublisher: @unchecked Sendable {
    enum Route {
        /// A relay WebSocket `send` frame on this socket.
        case socket(WebSocketClient, channel: String)
        /// A relay REST `POST /channels/{id}/messages`.
        case rest(HTTPClient, channel: String, token: String)
        /// An nchan publisher `POST /pub/{id}`.
        case nchan(HTTPClient, channel: String)
    }

    let stream: Int
    let route: Route
    let loop: any EventLoop
    let ackMeter: LoopMeter
    let counters: ScenarioCounters
    let run: String
    /// Ack-paced publishing keeps this many in flight; 0 publishes only when `publish` is called.
    let window: Int
    /// Ack-paced publishing stops after this many messages.
    let limit: Int
    private(set) var number = 0
    private(set) var acked = 0
    private(set) var failed = 0
    /// When each message in flight was sent, oldest first.
    private var sentAt: Deque<UInt64> = []

    init(
        stream: Int,
        route: Route,
        loop: any EventLoop,
        ackMeter: LoopMeter,
        counters: ScenarioCounters,
        run: String,
        window: Int = 0,
        limit: Int = .max
    ) {
        self.stream = stream
        self.route = route
        self.loop = loop
        self.ackMeter = ackMeter
        self.counters = counters
        self.run = run
        self.window = window
        self.limit = limit
    }

    var inFlight: Int { self.sentAt.count }

    /// Sends the stream's next message.
    func publish() {
        if self.loop.inEventLoop {
            self.publishNow()
        } else {
            self.loop.execute { self.publishNow() }
        }
    }

    /// Fills the window (ack-paced publishing), from any thread.
    func start() {
        self.loop.execute {
            while self.inFlight < self.window, self.number < self.limit { self.publishNow() }
        }
    }

    private func publishNow() {
        self.number += 1
        let now = ProcessStats.now()
        self.sentAt.append(now)
        let text = BenchPayload.text(stream: self.stream, number: self.number, sentAt: now)
        let clientMessageID = "\(self.run).\(self.stream).\(self.number)"
        switch self.route {
        case .socket(let socket, let channel):
            socket.send(#"{"type":"send","channel_id":"\#(channel)","client_msg_id":"\#(clientMessageID)","text":"\#(text)"}"#)
        case .rest(let client, let channel, let token):
            client.send(
                .POST,
                "/channels/\(channel)/messages",
                body: ByteBuffer(string: #"{"client_msg_id":"\#(clientMessageID)","text":"\#(text)"}"#),
                headers: [("Content-Type", "application/json"), ("Authorization", "Bearer \(token)")]
            ) { response in
                self.acknowledged(ok: response.map { (200..<300).contains($0.status) } ?? false)
            }
        case .nchan(let client, let channel):
            client.send(.POST, "/pub/\(channel)", body: ByteBuffer(string: text), headers: [("Content-Type", "text/plain")]) { response in
                self.acknowledged(ok: response.map { (200..<300).contains($0.status) } ?? false)
            }
        }
    }

    /// The answer to the oldest message in flight (answers come in order on one connection).
    func acknowledged(ok: Bool) {
        guard let sentAt = self.sentAt.popFirst() else { return }
        if ok {
            self.acked += 1
            self.ackMeter.record(sentAt: sentAt, now: ProcessStats.now())
            self.counters.acks.add(1, ordering: .relaxed)
        } else {
            // Counted, and not replaced: a connection that fails every request (closed by the
            // server) would otherwise publish again from inside its own failure, without end.
            self.failed += 1
            self.counters.errors.add(1, ordering: .relaxed)
            return
        }
        if self.window > 0, !self.counters.stopped.load(ordering: .relaxed) {
            while self.inFlight < self.window, self.number < self.limit { self.publishNow() }
        }
    }
}
