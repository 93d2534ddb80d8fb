import NIOCore
import NIOWebSocket
import Testing

@testable import Relay

/// Client frames as NIO's decoder hands them on: masked (unless told), data still masked.
func clientFrame(
    _ opcode: WebSocketOpcode,
    _ bytes: [UInt8] = [],
    fin: Bool = true,
    rsv1: Bool = false,
    rsv2: Bool = false,
    rsv3: Bool = false,
    masked: Bool = true
) -> WebSocketFrame {
    let key: WebSocketMaskingKey = [0x0A, 0xB1, 0x5C, 0xE3]
    var data = ByteBuffer(bytes: bytes)
    if masked { data.webSocketMask(key) }
    return WebSocketFrame(fin: fin, rsv1: rsv1, rsv2: rsv2, rsv3: rsv3, opcode: opcode, maskKey: masked ? key : nil, data: data)
}

func clientFrame(_ opcode: WebSocketOpcode, _ text: String, fin: Bool = true) -> WebSocketFrame {
    clientFrame(opcode, Array(text.utf8), fin: fin)
}

/// The RFC 6455 state machine without a channel: every rule of the protocol handler.
@Suite("WebSocketProtocol state machine")
struct WebSocketProtocolStateMachineTests {
    typealias Machine = WebSocketProtocolHandler.StateMachine

    func text(_ string: String) -> Machine.FrameAction { .deliver(.text(ByteBuffer(string: string))) }

    @Test func messagesAreDeliveredUnmasked() {
        var machine = Machine(maxMessageBytes: 1024)
        #expect(machine.receivedFrame(clientFrame(.text, "héllo")) == text("héllo"))
        #expect(machine.receivedFrame(clientFrame(.binary, [0, 1, 0xFF])) == .deliver(.binary(ByteBuffer(bytes: [0, 1, 0xFF]))))
        #expect(machine.receivedFrame(clientFrame(.text, "")) == text(""))
        #expect(machine.outboundWrite() == .write)
    }

    @Test func unmaskedFramesAreRefused() {
        var machine = Machine(maxMessageBytes: 1024)
        guard case .fail(1002, _) = machine.receivedFrame(clientFrame(.text, Array("hi".utf8), masked: false)) else {
            Issue.record("an unmasked frame must fail with 1002")
            return
        }
        #expect(machine.receivedFrame(clientFrame(.text, "after")) == .none, "nothing is read after a failure")
        #expect(machine.outboundWrite() == .drop)
    }

    /// RSV1 = 4, RSV2 = 2, RSV3 = 1.
    @Test(arguments: [4, 2, 1, 7] as [UInt8])
    func reservedBitsAreRefusedOnDataAndControlFrames(rsv: UInt8) {
        for opcode in [WebSocketOpcode.text, .ping, .connectionClose] {
            var machine = Machine(maxMessageBytes: 1024)
            let frame = clientFrame(opcode, [0x03, 0xE8], rsv1: rsv & 4 != 0, rsv2: rsv & 2 != 0, rsv3: rsv & 1 != 0)
            guard case .fail(1002, _) = machine.receivedFrame(frame) else {
                Issue.record("\(opcode) with reserved bits \(rsv) must fail with 1002 (a ping is not answered)")
                continue
            }
        }
    }

    @Test(arguments: [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] as [UInt8])
    func reservedOpcodesAreRefused(opcode: UInt8) {
        var machine = Machine(maxMessageBytes: 1024)
        guard case .fail(1002, _) = machine.receivedFrame(clientFrame(WebSocketOpcode(encodedWebSocketOpcode: opcode)!, [1])) else {
            Issue.record("opcode \(opcode) must fail with 1002")
            return
        }
    }

    @Test func pingsAreAnsweredAndPongsIgnored() {
        var machine = Machine(maxMessageBytes: 1024)
        #expect(machine.receivedFrame(clientFrame(.ping)) == .pong(ByteBuffer()))
        let payload = (0..<125).map { UInt8($0) }
        #expect(machine.receivedFrame(clientFrame(.ping, payload)) == .pong(ByteBuffer(bytes: payload)))
        #expect(machine.receivedFrame(clientFrame(.pong, [1, 2, 3])) == .none)
    }

    @Test func controlFramesOutOfShapeAreRefused() {
        var long = Machine(maxMessageBytes: 1024)
        guard case .fail(1002, _) = long.receivedFrame(clientFrame(.ping, [UInt8](repeating: 0, count: 126))) else {
            Issue.record("a 126-byte ping must fail with 1002")
            return
        }
        var fragmented = Machine(maxMessageBytes: 1024)
        guard case .fail(1002, _) = fragmented.receivedFrame(clientFrame(.ping, [1], fin: false)) else {
            Issue.record("a fragmented ping must fail with 1002")
            return
        }
    }

    @Test func fragmentsAreReassembledWithControlFramesBetween() {
        var machine = Machine(maxMessageBytes: 1024)
        #expect(machine.receivedFrame(clientFrame(.text, "{\"type\"", fin: false)) == .none)
        #expect(machine.receivedFrame(clientFrame(.ping, "p")) == .pong(ByteBuffer(string: "p")))
        #expect(machine.receivedFrame(clientFrame(.continuation, ":", fin: false)) == .none)
        #expect(machine.receivedFrame(clientFrame(.pong)) == .none)
        #expect(machine.receivedFrame(clientFrame(.continuation, "\"ping\"}")) == text("{\"type\":\"ping\"}"))
        // Binary too, and empty fragments.
        #expect(machine.receivedFrame(clientFrame(.binary, [1], fin: false)) == .none)
        #expect(machine.receivedFrame(clientFrame(.continuation, [], fin: false)) == .none)
        #expect(machine.receivedFrame(clientFrame(.continuation, [2])) == .deliver(.binary(ByteBuffer(bytes: [1, 2]))))
    }

    @Test func badFragmentSequencesFailWith1002() {
        var orphan = Machine(maxMessageBytes: 1024)
        guard case .fail(1002, _) = orphan.receivedFrame(clientFrame(.continuation, "x")) else {
            Issue.record("a continuation without a start must fail with 1002")
            return
        }
        for second in [WebSocketOpcode.text, .binary] {
            var nested = Machine(maxMessageBytes: 1024)
            #expect(nested.receivedFrame(clientFrame(.text, "a", fin: false)) == .none)
            guard case .fail(1002, _) = nested.receivedFrame(clientFrame(second, "b")) else {
                Issue.record("a \(second) frame inside a message must fail with 1002")
                continue
            }
        }
    }

    @Test func messagesOverTheLimitFailWith1009() {
        var exact = Machine(maxMessageBytes: 10)
        #expect(exact.receivedFrame(clientFrame(.binary, [UInt8](repeating: 1, count: 10))) != .none)
        #expect(exact.receivedFrame(clientFrame(.binary, [UInt8](repeating: 1, count: 6), fin: false)) == .none)
        #expect(
            exact.receivedFrame(clientFrame(.continuation, [UInt8](repeating: 1, count: 4)))
                == .deliver(.binary(ByteBuffer(repeating: 1, count: 10)))
        )

        var single = Machine(maxMessageBytes: 10)
        guard case .fail(1009, _) = single.receivedFrame(clientFrame(.text, String(repeating: "a", count: 11))) else {
            Issue.record("an 11-byte message over a 10-byte limit must fail with 1009")
            return
        }
        var fragmented = Machine(maxMessageBytes: 10)
        #expect(fragmented.receivedFrame(clientFrame(.text, String(repeating: "a", count: 6), fin: false)) == .none)
        guard case .fail(1009, _) = fragmented.receivedFrame(clientFrame(.continuation, String(repeating: "a", count: 5), fin: false))
        else {
            Issue.record("fragments adding up past the limit must fail with 1009 as they arrive")
            return
        }
    }

    @Test func invalidUTF8FailsWith1007() {
        var single = Machine(maxMessageBytes: 1024)
        guard case .fail(1007, _) = single.receivedFrame(clientFrame(.text, [0x61, 0xC0, 0x80])) else {
            Issue.record("an overlong form must fail with 1007")
            return
        }
        // Fails in the fragment that holds the bad byte, before the message ends.
        var early = Machine(maxMessageBytes: 1024)
        #expect(early.receivedFrame(clientFrame(.text, "ok", fin: false)) == .none)
        guard case .fail(1007, _) = early.receivedFrame(clientFrame(.continuation, [0xED, 0xA0, 0x80], fin: false)) else {
            Issue.record("a surrogate in a middle fragment must fail with 1007 at once")
            return
        }
        // A code point cut short at the message's end.
        var truncated = Machine(maxMessageBytes: 1024)
        #expect(truncated.receivedFrame(clientFrame(.text, [0x61, 0xE2, 0x82], fin: false)) == .none)
        guard case .fail(1007, _) = truncated.receivedFrame(clientFrame(.continuation, [])) else {
            Issue.record("a text ending inside a code point must fail with 1007")
            return
        }
        // Binary messages are not text.
        var binary = Machine(maxMessageBytes: 1024)
        #expect(binary.receivedFrame(clientFrame(.binary, [0xFF])) == .deliver(.binary(ByteBuffer(bytes: [0xFF]))))
    }

    @Test func aCodePointSplitAcrossFragmentsIsAccepted() {
        let bytes = Array("a€😀κ".utf8)
        for cut in 1..<bytes.count {
            var machine = Machine(maxMessageBytes: 1024)
            #expect(machine.receivedFrame(clientFrame(.text, Array(bytes[..<cut]), fin: false)) == .none)
            #expect(machine.receivedFrame(clientFrame(.continuation, Array(bytes[cut...]))) == text("a€😀κ"), "cut at \(cut)")
        }
    }

    /// After the client's close frame, nothing it sends counts; the answers to its earlier
    /// frames may still go out, then the close frame echoing its code, once the connection
    /// handler asks (whatever code it gives), and nothing after that.
    @Test func aClientCloseIsAnsweredOnceAndEverythingAfterIsIgnored() {
        var machine = Machine(maxMessageBytes: 1024)
        #expect(machine.receivedFrame(clientFrame(.text, "x", fin: false)) == .none)
        #expect(machine.receivedFrame(clientFrame(.connectionClose, [0x03, 0xE8] + Array("bye".utf8))) == .peerClosing(code: 1000))
        #expect(machine.receivedFrame(clientFrame(.continuation, "y")) == .none)
        #expect(machine.receivedFrame(clientFrame(.ping)) == .none, "no pong after a close")
        #expect(machine.receivedFrame(clientFrame(.connectionClose, [0x03, 0xE8])) == .none)
        #expect(machine.decoderFailed(.invalidFrameLength) == .none)
        #expect(machine.outboundWrite() == .write, "answers to earlier frames")
        #expect(machine.closeRequested(code: 1000, reason: "") == .answerClose(code: 1000))
        #expect(machine.outboundWrite() == .drop)
        #expect(machine.closeRequested(code: 1001, reason: "") == .none)
        #expect(machine.closeTimeoutFired() == .closeChannel)
    }

    /// The client's close frame waits at most the close timeout for the answers before it.
    @Test func aClientCloseIsEchoedAtTheTimeoutAtTheLatest() {
        var machine = Machine(maxMessageBytes: 1024)
        #expect(machine.receivedFrame(clientFrame(.connectionClose, [0x0F, 0xA0])) == .peerClosing(code: 4000))
        #expect(machine.closeTimeoutFired() == .answerClose(code: 4000))
        #expect(machine.outboundWrite() == .drop)
        #expect(machine.closeRequested(code: 1000, reason: "") == .none)
    }

    @Test func anEmptyCloseIsAnsweredEmpty() {
        var machine = Machine(maxMessageBytes: 1024)
        #expect(machine.receivedFrame(clientFrame(.connectionClose)) == .peerClosing(code: nil))
        #expect(machine.closeRequested(code: 1000, reason: "") == .answerClose(code: nil))
    }

    static let validCodes: [UInt16] = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
    static let invalidCodes: [UInt16] = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]

    @Test(arguments: validCodes)
    func validCloseCodesAreEchoed(code: UInt16) {
        var machine = Machine(maxMessageBytes: 1024)
        #expect(machine.receivedFrame(clientFrame(.connectionClose, [UInt8(code >> 8), UInt8(code & 0xFF)])) == .peerClosing(code: code))
        #expect(machine.closeRequested(code: 1000, reason: "") == .answerClose(code: code))
    }

    @Test(arguments: invalidCodes)
    func invalidCloseCodesFailWith1002(code: UInt16) {
        var machine = Machine(maxMessageBytes: 1024)
        guard case .fail(1002, _) = machine.receivedFrame(clientFrame(.connectionClose, [UInt8(code >> 8), UInt8(code & 0xFF)])) else {
            Issue.record("close code \(code) must fail with 1002")
            return
        }
    }

    @Test func malformedClosePayloads() {
        var oneByte = Machine(maxMessageBytes: 1024)
        guard case .fail(1002, _) = oneByte.receivedFrame(clientFrame(.connectionClose, [0x03])) else {
            Issue.record("a 1-byte close payload must fail with 1002")
            return
        }
        var badReason = Machine(maxMessageBytes: 1024)
        guard case .fail(1007, _) = badReason.receivedFrame(clientFrame(.connectionClose, [0x03, 0xE8, 0xCE, 0xBA, 0xE1])) else {
            Issue.record("a close reason that is not UTF-8 must fail with 1007")
            return
        }
    }

    @Test func aServerCloseWaitsForTheClientsAndDropsEverythingElse() {
        var machine = Machine(maxMessageBytes: 1024)
        #expect(machine.receivedFrame(clientFrame(.text, "part", fin: false)) == .none)
        #expect(machine.closeRequested(code: 4001, reason: "token") == .sendClose(code: 4001, reason: "token"))
        #expect(machine.closeRequested(code: 1001, reason: "") == .none, "one close frame only")
        #expect(machine.outboundWrite() == .drop)
        #expect(machine.receivedFrame(clientFrame(.continuation, "rest")) == .none)
        #expect(machine.receivedFrame(clientFrame(.text, "x")) == .none)
        #expect(machine.receivedFrame(clientFrame(.ping)) == .none)
        #expect(machine.receivedFrame(clientFrame(.connectionClose, [0x0F, 0xA1])) == .closeChannel)
        #expect(machine.receivedFrame(clientFrame(.connectionClose)) == .none)
    }

    @Test func aServerCloseTimesOut() {
        var machine = Machine(maxMessageBytes: 1024)
        #expect(machine.closeTimeoutFired() == .none, "no timeout while open")
        #expect(machine.closeRequested(code: 1001, reason: "") == .sendClose(code: 1001, reason: ""))
        #expect(machine.closeTimeoutFired() == .closeChannel)
        machine.channelInactive()
        #expect(machine.closeTimeoutFired() == .none)
        #expect(machine.receivedFrame(clientFrame(.connectionClose)) == .none)
    }

    @Test func decoderErrorsMapToCloseCodes() {
        let cases: [(NIOWebSocketError, UInt16)] = [
            (.invalidFrameLength, 1009), (.fragmentedControlFrame, 1002), (.multiByteControlFrameLength, 1002),
        ]
        for (error, code) in cases {
            var machine = Machine(maxMessageBytes: 1024)
            guard case .fail(let got, _) = machine.decoderFailed(error), got == code else {
                Issue.record("\(error) must fail with \(code)")
                continue
            }
            #expect(machine.decoderFailed(error) == .none, "once")
        }
        var closing = Machine(maxMessageBytes: 1024)
        _ = closing.closeRequested(code: 1000, reason: "")
        #expect(closing.decoderFailed(.invalidFrameLength) == .closeChannel, "no second close frame")
    }
}

/// The incremental UTF-8 validator.
@Suite("WebSocketProtocol UTF-8")
struct WebSocketProtocolUTF8Tests {
    func isValid(_ parts: [[UInt8]]) -> Bool {
        var validator = WebSocketUTF8Validator()
        for part in parts where !validator.feed(part) { return false }
        return validator.isComplete
    }

    @Test func validText() {
        for string in ["", "plain", "κόσμε", "\u{7F}\u{80}\u{7FF}\u{800}\u{D7FF}\u{E000}\u{FFFD}\u{FFFF}\u{10000}\u{10FFFF}", "😀 ok"] {
            #expect(isValid([Array(string.utf8)]), "\(string)")
        }
    }

    @Test(
        arguments: [
            [0x80], [0xBF], [0xC0, 0x80], [0xC1, 0xBF], [0xE0, 0x80, 0x80], [0xE0, 0x9F, 0xBF], [0xED, 0xA0, 0x80], [0xED, 0xBF, 0xBF],
            [0xF0, 0x80, 0x80, 0x80], [0xF0, 0x8F, 0xBF, 0xBF], [0xF4, 0x90, 0x80, 0x80], [0xF5, 0x80, 0x80, 0x80], [0xFE], [0xFF],
            [0xC2], [0xE2, 0x82], [0xF0, 0x9F, 0x98], [0xC2, 0x41], [0xE2, 0x28, 0xA1],
            [0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64],
        ] as [[UInt8]]
    )
    func invalidSequences(bytes: [UInt8]) {
        #expect(!isValid([bytes]))
        #expect(String(validating: bytes, as: UTF8.self) == nil, "the table itself agrees with the standard library")
    }

    @Test func splitsAnywhereAreAccepted() {
        let bytes = Array("κόσμε 😀 €".utf8)
        for cut in 0...bytes.count {
            #expect(isValid([Array(bytes[..<cut]), Array(bytes[cut...])]), "cut at \(cut)")
        }
        #expect(isValid(bytes.map { [$0] }), "one byte at a time")
    }
}
