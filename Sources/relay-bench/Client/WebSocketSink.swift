import NIOCore

/// What a benchmark socket does with what arrives. Called on the socket's event loop, never
/// concurrently for one socket; implementations must not block.
protocol WebSocketSink: AnyObject, Sendable {
    /// A complete text (or binary) message.
    func received(_ message: ByteBuffer, on socket: WebSocketClient)
    /// The socket closed: `code` is the close frame's code, nil when the peer just went away.
    func closed(_ socket: WebSocketClient, code: UInt16?)
}
