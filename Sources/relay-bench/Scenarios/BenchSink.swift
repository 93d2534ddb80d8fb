import NIOCore
import NIOHTTP1
import Synchronization

/// Counts shared by all the sockets of a scenario, read by the task that drives it.
final class ScenarioCounters: Sendable {
    let hellos = Atomic<Int>(0)
    let deliveries = Atomic<Int>(0)
    let acks = Atomic<Int>(0)
    let errors = Atomic<Int>(0)
    let closed = Atomic<Int>(0)
    let resumed = Atomic<Int>(0)
    /// Publishing is over: ack-paced publishers stop refilling their window.
    let stopped = Atomic<Bool>(false)
    /// The scenario is closing its sockets: closes are no longer counted.
    let closing = Atomic<Bool>(false)
    /// Close codes other than a normal end, for the report.
    let closeCodes = Mutex<[UInt16: Int]>([:])
}

/// One benchmark socket: counts and checks the messages it receives, answers to its publisher
/// (the relay's acks), notes hello and resumed. Touched only on the socket's event loop.
final class BenchSink: WebSocketSink, @unchecked Sendable {
    let counters: ScenarioCounters
    let meter: LoopMeter
    /// The relay wraps payloads in event JSON; nchan delivers them bare.
    let inJSON: Bool
    /// Whether this socket's deliveries count (a publisher's own echo does not).
    let countsDeliveries: Bool
    let ledger = DeliveryLedger()
    var publisher: StreamPublisher?
    /// Called on the relay's hello (e.g. to send a resume).
    let onHello: (@Sendable (WebSocketClient) -> Void)?
    private(set) var resumedAt: UInt64 = 0
    private(set) var lastDeliveryAt: UInt64 = 0

    init(
        counters: ScenarioCounters,
        meter: LoopMeter,
        inJSON: Bool,
        countsDeliveries: Bool = true,
        onHello: (@Sendable (WebSocketClient) -> Void)? = nil
    ) {
        self.counters = counters
        self.onHello = onHello
        self.meter = meter
        self.inJSON = inJSON
        self.countsDeliveries = countsDeliveries
    }

    func received(_ message: ByteBuffer, on socket: WebSocketClient) {
        // The relay's own frames start {"type":"…; events start {"channel_id":…
        if self.inJSON, message.getInteger(at: message.readerIndex + 2, as: UInt8.self) == UInt8(ascii: "t") {
            switch message.getInteger(at: message.readerIndex + 9, as: UInt8.self) {
            case UInt8(ascii: "a"):
                self.publisher?.acknowledged(ok: true)
            case UInt8(ascii: "e"):
                self.publisher?.acknowledged(ok: false)
            case UInt8(ascii: "h"):
                self.counters.hellos.add(1, ordering: .relaxed)
                self.onHello?(socket)
            case UInt8(ascii: "r") where message.readableBytes < 24:
                self.resumedAt = ProcessStats.now()
                self.counters.resumed.add(1, ordering: .relaxed)
            default:
                break
            }
            return
        }
        guard self.countsDeliveries, let fields = BenchPayload.parse(message, inJSON: self.inJSON) else { return }
        let now = ProcessStats.now()
        self.ledger.record(stream: fields.stream, number: fields.number)
        self.meter.record(sentAt: fields.sentAt, now: now)
        self.lastDeliveryAt = now
        self.counters.deliveries.add(1, ordering: .relaxed)
    }

    func closed(_ socket: WebSocketClient, code: UInt16?) {
        guard !self.counters.closing.load(ordering: .relaxed) else { return }
        self.counters.closed.add(1, ordering: .relaxed)
        self.counters.closeCodes.withLock { $0[code ?? 1006, default: 0] += 1 }
    }
}

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
    private var sentAt: [UInt64] = []
    private var head = 0

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

    var inFlight: Int { self.sentAt.count - self.head }

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
        guard self.head < self.sentAt.count else { return }
        let sentAt = self.sentAt[self.head]
        self.head += 1
        if self.head > 4096, self.head * 2 > self.sentAt.count {
            self.sentAt.removeFirst(self.head)
            self.head = 0
        }
        if ok {
            self.acked += 1
            self.ackMeter.record(sentAt: sentAt, now: ProcessStats.now())
            self.counters.acks.add(1, ordering: .relaxed)
        } else {
            self.failed += 1
            self.counters.errors.add(1, ordering: .relaxed)
        }
        if self.window > 0, !self.counters.stopped.load(ordering: .relaxed) {
            while self.inFlight < self.window, self.number < self.limit { self.publishNow() }
        }
    }
}
