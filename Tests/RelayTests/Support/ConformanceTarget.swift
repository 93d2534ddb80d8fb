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
    /// The relay itself (in process, on the suite's Redis), with a valid token.
    case relay

    var description: String { self.rawValue }

    func withTarget<T: Sendable>(_ body: (any ConformanceTarget) async throws -> T) async throws -> T {
        switch self {
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
