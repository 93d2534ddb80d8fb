import NIOCore
import NIOWebSocket

@testable import Relay

extension WebSocketWire {
    /// A text frame carrying `text`: what the relay's frames are compared with.
    static func text(_ text: String) -> ByteBuffer {
        Self.frame(opcode: .text, bytes: text.utf8)
    }
}
