import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

@testable import Relay

/// The server frame encoder: header bytes for each length form, close frames and their reason's
/// cut, and a round trip through NIO's decoder.
@Suite("WebSocketWire")
struct WebSocketWireTests {
    func bytes(_ buffer: ByteBuffer) -> [UInt8] { Array(buffer.readableBytesView) }

    @Test func lengthsUseTheShortestForm() {
        #expect(bytes(WebSocketWire.frame(opcode: .text, bytes: Array("hi".utf8))) == [0x81, 0x02, 0x68, 0x69])
        #expect(bytes(WebSocketWire.frame(opcode: .binary, payload: nil)) == [0x82, 0x00])
        #expect(Array(bytes(WebSocketWire.frame(opcode: .binary, bytes: [UInt8](repeating: 7, count: 125))).prefix(2)) == [0x82, 125])
        let frame126 = bytes(WebSocketWire.frame(opcode: .binary, bytes: [UInt8](repeating: 7, count: 126)))
        #expect(Array(frame126.prefix(4)) == [0x82, 126, 0x00, 126])
        #expect(frame126.count == 4 + 126)
        let frame65535 = bytes(WebSocketWire.frame(opcode: .text, bytes: [UInt8](repeating: 0x61, count: 65_535)))
        #expect(Array(frame65535.prefix(4)) == [0x81, 126, 0xFF, 0xFF])
        #expect(frame65535.count == 4 + 65_535)
        let frame65536 = bytes(WebSocketWire.frame(opcode: .binary, bytes: [UInt8](repeating: 7, count: 65_536)))
        #expect(Array(frame65536.prefix(10)) == [0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00])
        #expect(frame65536.count == 10 + 65_536)
    }

    @Test func fragmentsAndControlFrames() {
        #expect(bytes(WebSocketWire.frame(opcode: .text, bytes: [0x61], fin: false)) == [0x01, 0x01, 0x61])
        #expect(bytes(WebSocketWire.frame(opcode: .continuation, bytes: [0x62])) == [0x80, 0x01, 0x62])
        #expect(bytes(WebSocketWire.frame(opcode: .pong, payload: ByteBuffer(bytes: [1, 2]))) == [0x8A, 0x02, 1, 2])
        #expect(bytes(WebSocketWire.text("{}")) == [0x81, 0x02, 0x7B, 0x7D])
    }

    /// An ack and its own event in one buffer: the two frames, back to back, each as it would be
    /// alone, whatever length form the event takes.
    @Test func anAckAndItsEventShareABuffer() {
        let ack = ServerMessage.ack(clientMessageID: "c1", channel: "g1", seq: 9, messageID: "m1")
        for length in [2, 125, 126, 65_535, 65_536] {
            let json = "{" + String(repeating: "a", count: length - 2) + "}"
            #expect(bytes(ack.frame(followedBy: json)) == bytes(ack.frame) + bytes(WebSocketWire.text(json)), "\(length)")
        }
    }

    @Test func closeFrames() {
        #expect(bytes(WebSocketWire.close(code: nil, reason: "dropped")) == [0x88, 0x00])
        #expect(bytes(WebSocketWire.close(code: 1000, reason: "")) == [0x88, 0x02, 0x03, 0xE8])
        #expect(bytes(WebSocketWire.close(code: 4008, reason: "slow")) == [0x88, 0x06, 0x0F, 0xA8] + Array("slow".utf8))
    }

    @Test func closeReasonsAreCutToFitOnACharacterBoundary() throws {
        let ascii = String(repeating: "a", count: 200)
        let cut = bytes(WebSocketWire.close(code: 1001, reason: ascii))
        #expect(cut[1] == 125, "the payload fills the 125 bytes of a control frame")
        #expect(Array(cut[4...]) == Array(repeating: 0x61, count: 123))

        let exact = String(repeating: "b", count: 123)
        #expect(bytes(WebSocketWire.close(code: 1001, reason: exact)).count == 2 + 125)

        // "é" is 2 bytes: 61 of them (122 bytes) fit in 123, the 62nd would be split.
        let accented = String(repeating: "é", count: 100)
        let accentedFrame = bytes(WebSocketWire.close(code: 1001, reason: accented))
        #expect(accentedFrame[1] == 2 + 122)
        #expect(String(validating: accentedFrame[4...], as: UTF8.self) == String(repeating: "é", count: 61))

        // A 4-byte emoji straddling the limit is dropped whole.
        let emoji = String(repeating: "a", count: 121) + "😀"
        let emojiFrame = bytes(WebSocketWire.close(code: 1001, reason: emoji))
        #expect(String(validating: emojiFrame[4...], as: UTF8.self) == String(repeating: "a", count: 121))
    }

    @Test(arguments: [0, 1, 125, 126, 127, 65_535, 65_536, 70_000])
    func framesRoundTripThroughNIOsDecoder(length: Int) throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 20)))
        let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try channel.writeInbound(WebSocketWire.frame(opcode: .binary, bytes: payload, fin: length % 2 == 0))
        let frame = try #require(try channel.readInbound(as: WebSocketFrame.self))
        #expect(frame.opcode == .binary)
        #expect(frame.fin == (length % 2 == 0))
        #expect(frame.maskKey == nil)
        #expect(frame.reservedBits.isEmpty)
        #expect(Array(frame.data.readableBytesView) == payload)
        _ = try channel.finish()
    }
}
