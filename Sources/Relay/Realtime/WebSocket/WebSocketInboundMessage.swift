import NIOCore

/// A complete WebSocket message from the client, reassembled from its fragments and unmasked:
/// what ``WebSocketProtocolHandler`` passes on to the connection handler.
enum WebSocketInboundMessage: Sendable, Equatable {
    /// A text message; its bytes are valid UTF-8.
    case text(ByteBuffer)
    /// A binary message.
    case binary(ByteBuffer)
}
