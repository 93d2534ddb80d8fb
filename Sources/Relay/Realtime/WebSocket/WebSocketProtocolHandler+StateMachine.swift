import NIOCore
import NIOWebSocket

extension WebSocketProtocolHandler {
    /// RFC 6455 on one connection after the handshake: what each client frame, decoder error,
    /// close request, outbound write and timer means, as actions for the handler to carry out.
    ///
    /// Frames are checked (masked, no reserved bits or opcodes, well-formed control frames),
    /// fragmented messages reassembled up to `maxMessageBytes` and text validated as UTF-8
    /// fragment by fragment. Once a close frame was received or sent, client data frames are
    /// ignored and nothing but that one close frame goes out.
    struct StateMachine {
        /// A text or binary message whose first fragments have arrived.
        struct PartialMessage {
            var isText: Bool
            var bytes: ByteBuffer
            var utf8: WebSocketUTF8Validator
        }

        enum State {
            /// Frames flow both ways; `message` is the fragmented message being reassembled.
            case open(message: PartialMessage?)
            /// The client sent its close frame (with `code`): nothing more is read, the answers
            /// to its earlier frames may still be written, then the server's close frame.
            case closeReceived(code: UInt16?)
            /// The server sent its close frame and waits for the client's.
            case closeSent
            /// Close frames were exchanged, or the connection failed: the channel is closing.
            case closing
            /// The channel is gone.
            case closed
            /// Only while a method changes a message: the state lets go of its buffer, so that
            /// the buffer is appended to in place rather than copied.
            case modifying
        }

        /// The largest message accepted, in bytes, reassembled: larger ones fail with 1009.
        let maxMessageBytes: Int
        private(set) var state: State = .open(message: nil)

        init(maxMessageBytes: Int) {
            precondition(maxMessageBytes >= 0)
            self.maxMessageBytes = maxMessageBytes
        }

        enum FrameAction: Equatable {
            case none
            /// A complete message for the connection handler.
            case deliver(WebSocketInboundMessage)
            /// Answer a ping with a pong carrying `payload`.
            case pong(ByteBuffer)
            /// The client began the closing handshake (`code`, nil: none): tell the connection
            /// handler, which answers the client's earlier frames and then asks to close; the
            /// close frame then echoes `code` (after the close timeout at the latest), and the
            /// channel closes once it is written.
            case peerClosing(code: UInt16?)
            /// The client answered the server's close frame: close the channel.
            case closeChannel
            /// The client broke the protocol: write a close frame with `code` and `reason`,
            /// then close the channel.
            case fail(code: UInt16, reason: String)
        }

        /// A frame arrived from the client.
        mutating func receivedFrame(_ frame: WebSocketFrame) -> FrameAction {
            switch self.state {
            case .open(var message):
                if let reason = Self.violation(in: frame) {
                    return self.fail(WebSocketWire.CloseCode.protocolError, reason)
                }
                switch frame.opcode {
                case .ping:
                    return .pong(frame.unmaskedData)
                case .pong:
                    return .none
                case .connectionClose:
                    return self.receivedClose(payload: frame.unmaskedData)
                case .text, .binary:
                    guard message == nil else {
                        return self.fail(WebSocketWire.CloseCode.protocolError, "a message began inside another")
                    }
                    return self.startMessage(isText: frame.opcode == .text, payload: frame.unmaskedData, fin: frame.fin)
                case .continuation:
                    guard message != nil else {
                        return self.fail(WebSocketWire.CloseCode.protocolError, "a continuation frame outside a message")
                    }
                    self.state = .modifying
                    return self.continueMessage(&message!, payload: frame.unmaskedData, fin: frame.fin)
                default:
                    preconditionFailure("reserved opcodes are refused above")
                }
            case .closeSent:
                // Waiting for the client's close frame: anything else is dropped, and whatever
                // the close frame holds, the exchange is over.
                guard frame.opcode == .connectionClose else { return .none }
                self.state = .closing
                return .closeChannel
            case .closeReceived, .closing, .closed:
                // Nothing the client sends after its close frame counts (RFC 6455 section 5.5.1).
                return .none
            case .modifying:
                preconditionFailure("invalid state")
            }
        }

        /// Why `frame` breaks RFC 6455 whatever the state, if it does.
        private static func violation(in frame: WebSocketFrame) -> String? {
            if frame.maskKey == nil { return "an unmasked client frame" }
            if !frame.reservedBits.isEmpty { return "reserved bits set" }
            switch frame.opcode {
            case .continuation, .text, .binary, .connectionClose, .ping, .pong:
                break
            default:
                return "a reserved opcode"
            }
            if frame.opcode.isControlOpcode {
                // The decoder refuses these too; checked here so that the machine holds alone.
                if !frame.fin { return "a fragmented control frame" }
                if frame.length > WebSocketWire.maxControlPayload { return "a control frame over 125 bytes" }
            }
            return nil
        }

        private mutating func receivedClose(payload: ByteBuffer) -> FrameAction {
            var payload = payload
            switch payload.readableBytes {
            case 0:
                self.state = .closeReceived(code: nil)
                return .peerClosing(code: nil)
            case 1:
                return self.fail(WebSocketWire.CloseCode.protocolError, "a close frame of one byte")
            default:
                let code = payload.readInteger(as: UInt16.self)!
                guard WebSocketWire.CloseCode.isValidInFrame(code) else {
                    return self.fail(WebSocketWire.CloseCode.protocolError, "an invalid close code")
                }
                var utf8 = WebSocketUTF8Validator()
                guard utf8.feed(payload), utf8.isComplete else {
                    return self.fail(WebSocketWire.CloseCode.invalidPayload, "a close reason that is not UTF-8")
                }
                self.state = .closeReceived(code: code)
                return .peerClosing(code: code)
            }
        }

        private mutating func startMessage(isText: Bool, payload: ByteBuffer, fin: Bool) -> FrameAction {
            guard payload.readableBytes <= self.maxMessageBytes else {
                return self.fail(WebSocketWire.CloseCode.messageTooBig, "message too big")
            }
            var utf8 = WebSocketUTF8Validator()
            if isText {
                guard utf8.feed(payload), !fin || utf8.isComplete else {
                    return self.fail(WebSocketWire.CloseCode.invalidPayload, "text that is not UTF-8")
                }
            }
            if fin {
                return .deliver(isText ? .text(payload) : .binary(payload))
            }
            self.state = .open(message: PartialMessage(isText: isText, bytes: payload, utf8: utf8))
            return .none
        }

        /// - Precondition: the state is `.modifying`.
        private mutating func continueMessage(_ message: inout PartialMessage, payload: ByteBuffer, fin: Bool) -> FrameAction {
            guard payload.readableBytes <= self.maxMessageBytes - message.bytes.readableBytes else {
                return self.fail(WebSocketWire.CloseCode.messageTooBig, "message too big")
            }
            if message.isText {
                guard message.utf8.feed(payload), !fin || message.utf8.isComplete else {
                    return self.fail(WebSocketWire.CloseCode.invalidPayload, "text that is not UTF-8")
                }
            }
            message.bytes.writeImmutableBuffer(payload)
            if fin {
                self.state = .open(message: nil)
                return .deliver(message.isText ? .text(message.bytes) : .binary(message.bytes))
            }
            self.state = .open(message: message)
            return .none
        }

        private mutating func fail(_ code: UInt16, _ reason: String) -> FrameAction {
            self.state = .closing
            return .fail(code: code, reason: reason)
        }

        enum ErrorAction: Equatable {
            case none
            /// Write a close frame with `code` and `reason`, then close the channel.
            case fail(code: UInt16, reason: String)
            /// Close the channel (a close frame was already sent).
            case closeChannel
        }

        /// The frame decoder failed: the client sent a frame over the size limit, or a
        /// fragmented or over-long control frame. The decoder reads nothing more after that.
        mutating func decoderFailed(_ error: NIOWebSocketError) -> ErrorAction {
            switch self.state {
            case .open:
                self.state = .closing
                switch error {
                case .invalidFrameLength:
                    return .fail(code: WebSocketWire.CloseCode.messageTooBig, reason: "frame too big")
                case .fragmentedControlFrame:
                    return .fail(code: WebSocketWire.CloseCode.protocolError, reason: "a fragmented control frame")
                case .multiByteControlFrameLength:
                    return .fail(code: WebSocketWire.CloseCode.protocolError, reason: "a control frame over 125 bytes")
                }
            case .closeSent:
                self.state = .closing
                return .closeChannel
            case .closeReceived, .closing, .closed:
                // After the client's close frame, nothing it sends counts.
                return .none
            case .modifying:
                preconditionFailure("invalid state")
            }
        }

        enum CloseRequestAction: Equatable {
            case none
            /// Write a close frame, then wait (bounded) for the client's.
            case sendClose(code: UInt16, reason: String)
            /// Answer the client's close frame: a close frame echoing `code` (nil: an empty one),
            /// then close the channel.
            case answerClose(code: UInt16?)
        }

        /// The connection handler asked to close the connection.
        mutating func closeRequested(code: UInt16, reason: String) -> CloseRequestAction {
            switch self.state {
            case .open:
                // A message being reassembled is dropped with the state.
                self.state = .closeSent
                return .sendClose(code: code, reason: reason)
            case .closeReceived(let peerCode):
                // The client closed first: its close frame is echoed, whatever this one says.
                self.state = .closing
                return .answerClose(code: peerCode)
            case .closeSent, .closing, .closed:
                return .none
            case .modifying:
                preconditionFailure("invalid state")
            }
        }

        enum WriteAction: Equatable {
            case write
            /// A close frame went out: nothing follows it.
            case drop
        }

        /// The connection handler writes a frame.
        func outboundWrite() -> WriteAction {
            switch self.state {
            case .open, .closeReceived:
                return .write
            case .closeSent, .closing, .closed:
                return .drop
            case .modifying:
                preconditionFailure("invalid state")
            }
        }

        enum TimeoutAction: Equatable {
            case none
            case closeChannel
            /// The client's close frame waited long enough for the answers before it: echo it
            /// now, then close the channel.
            case answerClose(code: UInt16?)
        }

        /// The close timeout fired: started when a close frame was written, or when the
        /// client's arrived.
        mutating func closeTimeoutFired() -> TimeoutAction {
            switch self.state {
            case .closeReceived(let code):
                self.state = .closing
                return .answerClose(code: code)
            case .closeSent, .closing:
                self.state = .closing
                return .closeChannel
            case .open, .closed:
                return .none
            case .modifying:
                preconditionFailure("invalid state")
            }
        }

        /// The channel is gone.
        mutating func channelInactive() {
            self.state = .closed
        }
    }
}
