import Foundation
import TestSupport
import Testing

/// The value of the sample named exactly `sample` (name and labels) in a Prometheus text exposition.
func value(of sample: String, in text: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(sample + " ") {
        return Double(line.dropFirst(sample.count + 1))
    }
    return nil
}

@Suite("Metrics", .timeLimit(.minutes(2)))
struct MetricsTests {
    @Test func requestsEventsRedisLatencyAndOpenWebSocketsAreCounted() async throws {
        try await withRelay { relay in
            let alice = TestRedis.uniqueName("alice")
            let id = try await relay.createGroup(alice)
            let before = try await relay.request("GET", "/metrics").text
            _ = try await relay.send(alice, id, "one")
            _ = try await relay.send(alice, id, "two")
            expectError(try await relay.request("GET", "/channels/\(id)/messages?limit=0", token: relay.token(alice)), 400, "bad_request")
            let socket = try await TestSocket.connect(relay, token: relay.token(alice))
            defer { socket.abort() }

            let during = try await relay.request("GET", "/metrics")
            #expect(during.status == 200)
            let text = during.text
            let sends = "relay_http_requests_total{route=\"/channels/{channel}/messages\",method=\"POST\",status=\"201\"}"
            #expect(value(of: sends, in: text) == (value(of: sends, in: before) ?? 0) + 2, "\(text)")
            let refused = "relay_http_requests_total{route=\"/channels/{channel}/messages\",method=\"GET\",status=\"400\"}"
            #expect(value(of: refused, in: text) == 1, "\(text)")
            let appended = try #require(value(of: "relay_events_appended_total", in: text))
            #expect(appended >= (value(of: "relay_events_appended_total", in: before) ?? 0) + 2)
            #expect(
                value(of: "relay_redis_command_duration_seconds_count{operation=\"send\"}", in: text).map { $0 >= 2 } == true,
                "\(text)"
            )
            #expect(value(of: "relay_websockets", in: text) == 1, "\(text)")

            await socket.close()
            try await waitUntil("the gauge drops when the socket closes", timeout: .seconds(10)) {
                value(of: "relay_websockets", in: try await relay.request("GET", "/metrics").text) == 0
            }
        }
    }
}
