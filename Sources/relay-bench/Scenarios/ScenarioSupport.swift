import NIOCore
import Synchronization

/// Pieces every scenario uses: publishing at a rate, waiting, checking what arrived.
enum ScenarioSupport {
    /// Publishes round-robin over `publishers` at `rate` messages/s in total for `seconds`; with
    /// a rate of 0, lets each publisher keep its window full for `seconds` instead. Returns when
    /// publishing is over (acks may still be on their way).
    static func drive(_ publishers: [StreamPublisher], rate: Double, seconds: Double, counters: ScenarioCounters) async throws {
        let start = ContinuousClock.now
        let end = start + .milliseconds(Int64(seconds * 1000))
        if rate <= 0 {
            for publisher in publishers { publisher.start() }
            try await Task.sleep(until: end)
        } else {
            let total = Int(rate * seconds)
            var sent = 0
            var next = 0
            while sent < total, ContinuousClock.now < end + .seconds(1) {
                let elapsed = ContinuousClock.now - start
                let due = min(total, Int(Self.seconds(elapsed) * rate) + 1)
                while sent < due {
                    publishers[next].publish()
                    next = (next + 1) % publishers.count
                    sent += 1
                }
                try await Task.sleep(for: .milliseconds(rate >= 200 ? 2 : 10))
            }
        }
        counters.stopped.store(true, ordering: .relaxed)
    }

    /// Waits (at most `timeout`) until every publisher's messages are answered.
    static func waitForAcks(_ publishers: [StreamPublisher], timeout: Duration) async throws {
        _ = try await waitUntil(timeout: timeout) {
            for publisher in publishers {
                let pending = try await publisher.loop.submit { publisher.inFlight }.get()
                if pending > 0 { return false }
            }
            return true
        }
    }

    /// (acked, failed) per publisher, read on their loops.
    static func published(_ publishers: [StreamPublisher]) async throws -> [(acked: Int, failed: Int)] {
        var result: [(Int, Int)] = []
        for publisher in publishers {
            result.append(try await publisher.loop.submit { (publisher.acked, publisher.failed) }.get())
        }
        return result
    }

    /// Checks each sink's streams against what was published: `expected(sinkIndex)` lists the
    /// streams that sink should have received in full, with how many each published.
    static func check(
        _ sinks: [BenchSink],
        sockets: [WebSocketClient],
        counters: ScenarioCounters,
        expected: @escaping @Sendable (Int) -> [(stream: Int, published: Int)]
    ) async throws -> DeliveryCheck {
        var check = DeliveryCheck()
        for (index, sink) in sinks.enumerated() {
            let socket = sockets[index]
            let counts = try await socket.eventLoop.submit { () -> (Int, Int, Int) in
                var missing = 0
                var duplicates = 0
                var outOfOrder = 0
                for (stream, published) in expected(index) {
                    let ledger = sink.ledger.streams[stream] ?? DeliveryLedger.Stream()
                    missing += ledger.missing(published: published)
                    duplicates += ledger.duplicates
                    outOfOrder += ledger.outOfOrder
                }
                return (missing, duplicates, outOfOrder)
            }.get()
            check.missing += counts.0
            check.duplicates += counts.1
            check.outOfOrder += counts.2
        }
        check.closedSockets = counters.closed.load(ordering: .relaxed)
        return check
    }

    /// Closes every socket without counting the closes.
    static func close(_ sockets: [WebSocketClient], counters: ScenarioCounters) async {
        counters.closing.store(true, ordering: .relaxed)
        for socket in sockets { socket.close() }
        try? await Task.sleep(for: .milliseconds(200))
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// Close codes seen, as "4008×3, 1006×1", for a report line.
    static func closeCodes(_ counters: ScenarioCounters) -> String {
        let codes = counters.closeCodes.withLock { $0 }
        return codes.isEmpty ? "none" : codes.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: ", ")
    }
}
