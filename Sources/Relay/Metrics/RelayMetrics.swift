import Prometheus
import Synchronization

/// The relay's Prometheus metrics, on a registry of its own (`GET /metrics` renders it).
final class RelayMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let eventsAppended: Counter
    private let webSockets: Gauge
    private let shedEvents: Counter
    private let slowConsumers: Counter
    /// Metrics with labels, each made once (by route pattern and operation name: a bounded set).
    private let latencies = Mutex<[String: DurationHistogram]>([:])
    private let requestCounters = Mutex<[RequestKey: Counter]>([:])
    private static var requests: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "relay",
            metricName: "http_requests",
            unitName: "total",
            helpText: "HTTP requests by route, method and status"
        )
    }
    private static var redisLatency: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "relay",
            metricName: "redis_command_duration",
            unitName: "seconds",
            helpText: "Latency of Redis operations, as the relay sees it"
        )
    }
    private static let latencyBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1),
    ]

    init() {
        self.eventsAppended = self.registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "relay",
                metricName: "events_appended",
                unitName: "total",
                helpText: "Events appended to channel logs"
            )
        )
        self.shedEvents = self.registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "relay",
                metricName: "fanout_events_shed",
                unitName: "total",
                helpText: "Live events not handed to an event loop that was too far behind (its sockets filled them from the log)"
            )
        )
        self.slowConsumers = self.registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "relay",
                metricName: "websocket_slow_consumers",
                unitName: "total",
                helpText: "WebSockets closed with 4008: more owed to them than --max-queued-bytes"
            )
        )
        self.webSockets = self.registry.makeGauge(
            descriptor: MetricNameDescriptor(namespace: "relay", metricName: "websockets", unitName: "", helpText: "WebSockets open now")
        )
    }

    /// Counts one live event shed for a lagging event loop.
    func shedEvent() {
        self.shedEvents.increment()
    }

    /// Counts one WebSocket closed for owing it more than its budget.
    func slowConsumerClosed() {
        self.slowConsumers.increment()
    }

    /// The number of WebSockets open now.
    func openWebSockets(_ count: Int) {
        self.webSockets.set(Int64(count))
    }

    /// Counts one HTTP request by route pattern (not by concrete path: ids would explode the label set).
    func request(route: String, method: String, status: Int) {
        let key = RequestKey(route: route, method: method, status: status)
        let counter = self.requestCounters.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = self.registry.makeCounter(
                descriptor: Self.requests,
                labels: [("route", route), ("method", method), ("status", String(status))]
            )
            counters[key] = counter
            return counter
        }
        counter.increment()
    }

    private struct RequestKey: Hashable {
        var route: String
        var method: String
        var status: Int
    }

    func appended(_ count: Int = 1) {
        self.eventsAppended.increment(by: Int64(count))
    }

    /// Records how long one Redis operation (a script or a command) took.
    func redisLatency(_ operation: String, _ duration: Duration) {
        // The registry builds the metric's name and takes its lock on every `make…`: on the send
        // path that is once per message, so each operation's histogram is looked up once.
        let histogram = self.latencies.withLock { latencies in
            if let histogram = latencies[operation] { return histogram }
            let histogram = self.registry.makeDurationHistogram(
                descriptor: Self.redisLatency,
                labels: [("operation", operation)],
                buckets: Self.latencyBuckets
            )
            latencies[operation] = histogram
            return histogram
        }
        histogram.record(duration)
    }

    /// The Prometheus text exposition of every metric.
    func render() -> [UInt8] {
        self.registry.emitToBuffer()
    }
}
