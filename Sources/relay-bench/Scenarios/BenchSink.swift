import NIOCore
import NIOHTTP1
import Synchronization

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
