import Foundation
import TestSupport
import Testing

/// What a WebSocket server owes any client (RFC 6455; the Autobahn testsuite's sections 1–7
/// and 9 within a 64 KiB message limit), over real sockets, with frames written by hand.
///
/// Runs against every ``ConformanceTargetKind``. Each case opens its own connections; every read
/// is bounded by a timeout. A target answers `{"type":"ping"}` with `{"type":"pong"}` and any
/// other message with an `error`, which is what the cases use to see a message was taken whole.
@Suite("WebSocketConformance")
struct WebSocketConformanceTests {
    static let ping = #"{"type":"ping"}"#

    // MARK: - Helpers

    func connect(_ target: any ConformanceTarget) async throws -> RawWebSocket {
        let socket = try await RawWebSocket.connect(port: target.port, path: target.path, query: target.query)
        if let greeting = target.greeting {
            // A server that speaks first serves frames after its greeting: wait for it.
            let read = try await socket.read(timeout: .seconds(10))
            guard case .frame(let frame) = read, frame.jsonType == greeting else {
                throw TestFailure("expected the \(greeting) first, got \(read)")
            }
        }
        return socket
    }

    /// The next read that is not a frame the server sent on its own.
    func nextAnswer(
        _ socket: RawWebSocket,
        _ target: any ConformanceTarget,
        timeout: Duration = .seconds(20)
    ) async throws -> RawWebSocket.Read {
        while true {
            let read = try await socket.read(timeout: timeout)
            if case .frame(let frame) = read, target.isUnsolicited(frame) { continue }
            return read
        }
    }

    /// Expects the answer to a complete message: a text frame, `pong` or `error`.
    func expectMessageAnswer(
        _ socket: RawWebSocket,
        _ target: any ConformanceTarget,
        _ what: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let read = try await nextAnswer(socket, target)
        guard case .frame(let frame) = read, ["pong", "error"].contains(frame.jsonType ?? "") else {
            Issue.record("\(what): expected the answer to a message, got \(read)", sourceLocation: sourceLocation)
            throw TestFailure("\(what): no answer")
        }
    }

    /// Expects a pong frame carrying `payload`.
    func expectPong(
        _ socket: RawWebSocket,
        _ target: any ConformanceTarget,
        _ payload: [UInt8],
        _ what: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let read = try await nextAnswer(socket, target)
        guard case .frame(let frame) = read, frame.opcode == 0xA, frame.fin, frame.rsv == 0, !frame.masked else {
            Issue.record("\(what): expected a pong, got \(read)", sourceLocation: sourceLocation)
            throw TestFailure("\(what): no pong")
        }
        #expect(frame.payload == payload, "\(what): the pong carries the ping's payload", sourceLocation: sourceLocation)
    }

    /// Sends `{"type":"ping"}` and expects `{"type":"pong"}`: the connection is open and in step.
    func expectAlive(
        _ socket: RawWebSocket,
        _ target: any ConformanceTarget,
        _ what: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        try await socket.send(RawWebSocket.text(Self.ping))
        let read = try await nextAnswer(socket, target)
        guard case .frame(let frame) = read, frame.jsonType == "pong" else {
            Issue.record("\(what): expected a pong message, got \(read)", sourceLocation: sourceLocation)
            throw TestFailure("\(what): not alive")
        }
    }

    /// Expects the server to fail the connection: one close frame with `code`, and nothing else
    /// (no answer, no pong) before the end of the TCP connection.
    func expectFailure(
        _ socket: RawWebSocket,
        _ target: any ConformanceTarget,
        code: UInt16,
        _ what: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let frames = try await socket.readToEnd(timeout: .seconds(20)).filter { !target.isUnsolicited($0) }
        #expect(frames.map(\.opcode) == [0x8], "\(what): one close frame, then the end; got \(frames)", sourceLocation: sourceLocation)
        #expect(frames.first?.closeCode == code, "\(what): close code", sourceLocation: sourceLocation)
        if let close = frames.first {
            #expect(!close.masked && close.fin && close.rsv == 0, "\(what): a well-formed close frame", sourceLocation: sourceLocation)
            #expect(
                String(validating: close.payload.dropFirst(2), as: UTF8.self) != nil,
                "\(what): the reason is UTF-8",
                sourceLocation: sourceLocation
            )
        }
    }

    /// Opens a connection, sends `bytes` and expects the connection failed with `code`.
    func expectFailure(
        _ target: any ConformanceTarget,
        sending bytes: [UInt8],
        code: UInt16,
        _ what: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let socket = try await connect(target)
        try await socket.send(bytes)
        try await expectFailure(socket, target, code: code, what, sourceLocation: sourceLocation)
    }

    /// A text message of exactly `size` bytes: the JSON ping padded with spaces when it fits.
    static func textMessage(size: Int) -> String {
        size >= Self.ping.count
            ? #"{"type":"ping""# + String(repeating: " ", count: size - Self.ping.count) + "}" : String(repeating: "a", count: size)
    }

    // MARK: - 1. Framing

    @Test(arguments: ConformanceTargetKind.allCases)
    func textAndBinaryMessagesOfEverySize(kind: ConformanceTargetKind) async throws {
        try await kind.withTarget { target in
            let socket = try await connect(target)
            let sizes = [0, 1, 125, 126, 127, 128, 65_535, 65_536].filter { $0 <= target.maxMessageBytes }
            for size in sizes {
                try await socket.send(RawWebSocket.text(Self.textMessage(size: size)))
                try await expectMessageAnswer(socket, target, "text of \(size) bytes")
                try await socket.send(RawWebSocket.clientFrame(opcode: 0x2, payload: [UInt8](repeating: 0xFE, count: size)))
                try await expectMessageAnswer(socket, target, "binary of \(size) bytes")
            }
            // The largest, written in small pieces (Autobahn 1.1.8, 1.2.8).
            let largest = RawWebSocket.text(Self.textMessage(size: target.maxMessageBytes))
            try await socket.send(largest, inChunksOf: 997)
            try await expectMessageAnswer(socket, target, "the largest text, written piecemeal")
            try await expectAlive(socket, target, "after every size")
        }
    }

    // MARK: - 2. Pings and pongs

    @Test(arguments: ConformanceTargetKind.allCases)
    func pingsAreAnsweredWithTheirPayload(kind: ConformanceTargetKind) async throws {
        try await kind.withTarget { target in
            let socket = try await connect(target)
            try await socket.send(RawWebSocket.clientFrame(opcode: 0x9))
            try await expectPong(socket, target, [], "a ping without payload")
            try await socket.send(RawWebSocket.clientFrame(opcode: 0x9, payload: Array("Hello, world!".utf8)))
            try await expectPong(socket, target, Array("Hello, world!".utf8), "a ping with text")
            let binary: [UInt8] = [0x00, 0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0x00, 0xFF]
            try await socket.send(RawWebSocket.clientFrame(opcode: 0x9, payload: binary))
            try await expectPong(socket, target, binary, "a ping with binary")
            let full = (0..<125).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
            try await socket.send(RawWebSocket.clientFrame(opcode: 0x9, payload: full))
            try await expectPong(socket, target, full, "a ping of 125 bytes")
            try await socket.send(RawWebSocket.clientFrame(opcode: 0x9, payload: full), inChunksOf: 1)
            try await expectPong(socket, target, full, "a ping of 125 bytes written a byte at a time")

            // Unsolicited pongs are ignored (2.7, 2.8, 2.9).
            try await socket.send(
                RawWebSocket.clientFrame(opcode: 0xA) + RawWebSocket.clientFrame(opcode: 0xA, payload: Array("unsolicited".utf8))
            )
            try await socket.send(RawWebSocket.clientFrame(opcode: 0x9, payload: Array("after pongs".utf8)))
            try await expectPong(socket, target, Array("after pongs".utf8), "a ping after unsolicited pongs")

            // Ten pings in one write: ten pongs, in order (2.10, 2.11).
            let pings = (0..<10).flatMap { RawWebSocket.clientFrame(opcode: 0x9, payload: Array("ping \($0)".utf8)) }
            try await socket.send(pings)
            for index in 0..<10 {
                try await expectPong(socket, target, Array("ping \(index)".utf8), "pong \(index) of 10")
            }
            try await expectAlive(socket, target, "after the pings")
        }
    }

    @Test(arguments: ConformanceTargetKind.allCases)
    func oversizedOrFragmentedControlFramesFail(kind: ConformanceTargetKind) async throws {
        try await kind.withTarget { target in
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x9, payload: [UInt8](repeating: 0xFE, count: 126)),
                code: 1002,
                "a ping of 126 bytes (2.5)"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x9, payload: Array("frag".utf8), fin: false)
                    + RawWebSocket.clientFrame(opcode: 0x0, payload: Array("ment".utf8)),
                code: 1002,
                "a fragmented ping (5.1)"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0xA, payload: Array("frag".utf8), fin: false)
                    + RawWebSocket.clientFrame(opcode: 0x0, payload: Array("ment".utf8)),
                code: 1002,
                "a fragmented pong (5.2)"
            )
        }
    }

    // MARK: - 3. Reserved bits

    @Test(arguments: ConformanceTargetKind.allCases)
    func reservedBitsFailTheConnection(kind: ConformanceTargetKind) async throws {
        try await kind.withTarget { target in
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x1, payload: Array(Self.ping.utf8), rsv: 4),
                code: 1002,
                "RSV1 on text (3.1)"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x2, payload: [1, 2, 3], rsv: 3),
                code: 1002,
                "RSV2+3 on binary (3.5)"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x9, payload: [1], rsv: 6),
                code: 1002,
                "RSV1+2 on a ping: not answered (3.6)"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x8, payload: [0x03, 0xE8], rsv: 7),
                code: 1002,
                "all RSV bits on a close (3.7)"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0xA, payload: [1], rsv: 1),
                code: 1002,
                "RSV3 on a pong"
            )

            // A good message, then one with RSV2, then a ping: the first is answered, then the failure (3.2).
            let socket = try await connect(target)
            try await socket.send(
                RawWebSocket.text(Self.ping) + RawWebSocket.clientFrame(opcode: 0x1, payload: Array(Self.ping.utf8), rsv: 2)
                    + RawWebSocket.clientFrame(opcode: 0x9)
            )
            try await expectMessageAnswer(socket, target, "the message before the bad one")
            try await expectFailure(socket, target, code: 1002, "RSV2 on text after a good message (3.2)")
        }
    }

    // MARK: - 4. Opcodes

    @Test(arguments: ConformanceTargetKind.allCases)
    func reservedOpcodesFailTheConnection(kind: ConformanceTargetKind) async throws {
        try await kind.withTarget { target in
            for opcode: UInt8 in [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
                try await expectFailure(
                    target,
                    sending: RawWebSocket.clientFrame(opcode: opcode, payload: [0x61]),
                    code: 1002,
                    "opcode \(opcode) (4.1, 4.2)"
                )
            }
            let socket = try await connect(target)
            try await socket.send(
                RawWebSocket.text(Self.ping) + RawWebSocket.clientFrame(opcode: 0x5) + RawWebSocket.clientFrame(opcode: 0x9)
            )
            try await expectMessageAnswer(socket, target, "the message before the reserved opcode")
            try await expectFailure(socket, target, code: 1002, "a reserved opcode after a good message (4.1.3)")
        }
    }

    // MARK: - 5. Fragmentation

    @Test(arguments: ConformanceTargetKind.allCases)
    func fragmentedMessagesAreReassembled(kind: ConformanceTargetKind) async throws {
        try await kind.withTarget { target in
            let socket = try await connect(target)
            let ping = Array(Self.ping.utf8)
            // Two fragments (5.3, 5.4).
            try await socket.send(RawWebSocket.clientFrame(opcode: 0x1, payload: Array(ping[..<7]), fin: false))
            try await socket.send(RawWebSocket.clientFrame(opcode: 0x0, payload: Array(ping[7...])))
            #expect(
                try await nextAnswer(socket, target)
                    == .frame(.init(fin: true, rsv: 0, opcode: 0x1, masked: false, payload: Array(#"{"type":"pong"}"#.utf8)))
            )

            // A ping between the fragments is answered first (5.6, 5.7).
            try await socket.send(
                RawWebSocket.clientFrame(opcode: 0x1, payload: Array(ping[..<3]), fin: false)
                    + RawWebSocket.clientFrame(opcode: 0x9, payload: Array("between".utf8))
                    + RawWebSocket.clientFrame(opcode: 0x0, payload: Array(ping[3..<9]), fin: false)
                    + RawWebSocket.clientFrame(opcode: 0xA)
                    + RawWebSocket.clientFrame(opcode: 0x0, payload: Array(ping[9...]))
            )
            try await expectPong(socket, target, Array("between".utf8), "a ping inside a fragmented message")
            try await expectMessageAnswer(socket, target, "the message around the ping")

            // One byte per fragment, with empty fragments, written a byte at a time (5.8, 5.19, 5.20).
            var frames = RawWebSocket.clientFrame(opcode: 0x1, payload: [], fin: false)
            for byte in ping { frames += RawWebSocket.clientFrame(opcode: 0x0, payload: [byte], fin: false) }
            frames += RawWebSocket.clientFrame(opcode: 0x9, payload: [42]) + RawWebSocket.clientFrame(opcode: 0x0, payload: [])
            try await socket.send(frames, inChunksOf: 1)
            try await expectPong(socket, target, [42], "a ping inside a message of one-byte fragments")
            let read = try await nextAnswer(socket, target)
            #expect(
                read == .frame(.init(fin: true, rsv: 0, opcode: 0x1, masked: false, payload: Array(#"{"type":"pong"}"#.utf8))),
                "the one-byte fragments"
            )

            // Binary in fragments.
            try await socket.send(
                RawWebSocket.clientFrame(opcode: 0x2, payload: [1, 2], fin: false) + RawWebSocket.clientFrame(opcode: 0x0, payload: [3])
            )
            try await expectMessageAnswer(socket, target, "a fragmented binary message")
            try await expectAlive(socket, target, "after the fragmented messages")
        }
    }

    @Test(arguments: ConformanceTargetKind.allCases)
    func badFragmentSequencesFailWith1002(kind: ConformanceTargetKind) async throws {
        try await kind.withTarget { target in
            let ping = Array(Self.ping.utf8)
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x0, payload: ping),
                code: 1002,
                "a final continuation without a start (5.9)"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x0, payload: ping, fin: false) + RawWebSocket.text(Self.ping),
                code: 1002,
                "a continuation without a start, then a text (5.10, 5.13)"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x1, payload: Array(ping[..<5]), fin: false) + RawWebSocket.text(Self.ping),
                code: 1002,
                "a text inside a fragmented text (5.18)"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x1, payload: Array(ping[..<5]), fin: false)
                    + RawWebSocket.clientFrame(opcode: 0x2, payload: [1], fin: false),
                code: 1002,
                "a binary start inside a fragmented text"
            )
        }
    }

    // MARK: - 6. UTF-8

    static let invalidUTF8: [[UInt8]] = [
        // 6.3.1: "κόσμε" then a surrogate
        [0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64],
        [0x80],  // a lone continuation byte
        [0xC0, 0xAF],  // overlong "/"
        [0xE0, 0x80, 0xAF],  // overlong, 3 bytes
        [0xF0, 0x80, 0x80, 0xAF],  // overlong, 4 bytes
        [0xF4, 0x90, 0x80, 0x80],  // above U+10FFFF
        [0xED, 0xBF, 0xBF],  // U+DFFF
        [0xFE], [0xFF],
        [0x61, 0xCE],  // ends inside a code point
    ]

    @Test(arguments: ConformanceTargetKind.allCases)
    func invalidUTF8FailsWith1007(kind: ConformanceTargetKind) async throws {
        try await kind.withTarget { target in
            for bytes in Self.invalidUTF8 {
                try await expectFailure(target, sending: RawWebSocket.clientFrame(opcode: 0x1, payload: bytes), code: 1007, "text \(bytes)")
            }
            // Split across fragments: each fragment alone is fine, together they are not.
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x1, payload: [0x61, 0xED], fin: false)
                    + RawWebSocket.clientFrame(opcode: 0x0, payload: [0xA0, 0x80]),
                code: 1007,
                "a surrogate split across fragments"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x1, payload: [0x61, 0xE2, 0x82], fin: false)
                    + RawWebSocket.clientFrame(opcode: 0x0, payload: []),
                code: 1007,
                "a message ending inside a code point"
            )
            // Fails fast: the first fragment is enough, the message need not end (6.4.x).
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x1, payload: Array("κόσμε".utf8) + [0xF4, 0x90, 0x80, 0x80], fin: false),
                code: 1007,
                "invalid UTF-8 in an unfinished message"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.close(code: 1000, reason: [0xCE, 0xBA, 0xED, 0xA0, 0x80]),
                code: 1007,
                "a close reason that is not UTF-8 (7.5.1)"
            )
        }
    }

    @Test(arguments: ConformanceTargetKind.allCases)
    func validUTF8IsAcceptedWhereverItIsSplit(kind: ConformanceTargetKind) async throws {
        try await kind.withTarget { target in
            let socket = try await connect(target)
            let text = Array(#"{"type":"ping","text":"κόσμε € 😀 \#u{10FFFF} \#u{FFFD} \#u{E000} \#u{D7FF}"}"#.utf8)
            try await socket.send(RawWebSocket.clientFrame(opcode: 0x1, payload: text))
            try await expectMessageAnswer(socket, target, "valid UTF-8 in one frame")
            for cut in 1..<text.count {
                try await socket.send(
                    RawWebSocket.clientFrame(opcode: 0x1, payload: Array(text[..<cut]), fin: false)
                        + RawWebSocket.clientFrame(opcode: 0x0, payload: Array(text[cut...]))
                )
                try await expectMessageAnswer(socket, target, "valid UTF-8 split at byte \(cut)")
            }
            try await expectAlive(socket, target, "after the split messages")
        }
    }

    // MARK: - 7. Closing

    static let validCloseCodes: [UInt16] = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
    static let invalidCloseCodes: [UInt16] = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]

    @Test(arguments: ConformanceTargetKind.allCases)
    func validCloseCodesAreEchoed(kind: ConformanceTargetKind) async throws {
        try await kind.withTarget { target in
            for code in Self.validCloseCodes {
                let socket = try await connect(target)
                try await socket.send(RawWebSocket.close(code: code, reason: Array("reason ✓".utf8)))
                try await expectFailure(socket, target, code: code, "close \(code) echoed (7.7)")
            }
            // No code (7.3.1): answered with a close frame, empty or 1000.
            let empty = try await connect(target)
            try await empty.send(RawWebSocket.close(code: nil))
            let frames = try await empty.readToEnd().filter { !target.isUnsolicited($0) }
            #expect(frames.map(\.opcode) == [0x8], "an empty close is answered with one close frame; got \(frames)")
            #expect(frames.first.map { $0.payload.isEmpty || $0.closeCode == 1000 } == true)
            // The longest reason that fits (7.3.5).
            let longest = try await connect(target)
            try await longest.send(RawWebSocket.close(code: 1000, reason: [UInt8](repeating: 0x2A, count: 123)))
            try await expectFailure(longest, target, code: 1000, "a close with a 123-byte reason")
        }
    }

    @Test(arguments: ConformanceTargetKind.allCases)
    func invalidClosePayloadsFailWith1002(kind: ConformanceTargetKind) async throws {
        try await kind.withTarget { target in
            for code in Self.invalidCloseCodes {
                try await expectFailure(target, sending: RawWebSocket.close(code: code), code: 1002, "close code \(code) (7.9, 7.13)")
            }
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x8, payload: [0x03]),
                code: 1002,
                "a close payload of 1 byte (7.3.2)"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.close(code: 1000, reason: [UInt8](repeating: 0x2A, count: 124)),
                code: 1002,
                "a close payload of 126 bytes (7.3.6)"
            )
        }
    }

    @Test(arguments: ConformanceTargetKind.allCases)
    func framesAfterACloseAreIgnored(kind: ConformanceTargetKind) async throws {
        try await kind.withTarget { target in
            // Close, then a message, a ping and another close, in one write (7.1.2–7.1.4).
            try await expectFailure(
                target,
                sending: RawWebSocket.close(code: 1000) + RawWebSocket.text(Self.ping) + RawWebSocket.clientFrame(opcode: 0x9, payload: [1])
                    + RawWebSocket.close(code: 1001),
                code: 1000,
                "only the close is answered"
            )
            // A fragmented message interrupted by a close (7.1.5).
            let ping = Array(Self.ping.utf8)
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x1, payload: Array(ping[..<4]), fin: false) + RawWebSocket.close(code: 1000)
                    + RawWebSocket.clientFrame(opcode: 0x0, payload: Array(ping[4...])),
                code: 1000,
                "the message cut by the close is dropped"
            )
            // A message answered before the close (7.1.1, 7.1.6).
            let socket = try await connect(target)
            try await socket.send(
                RawWebSocket.text(Self.textMessage(size: 10_000)) + RawWebSocket.clientFrame(opcode: 0x9) + RawWebSocket.close(code: 1000)
            )
            try await expectMessageAnswer(socket, target, "the message before the close")
            try await expectPong(socket, target, [], "the ping before the close")
            try await expectFailure(socket, target, code: 1000, "the close after them")
        }
    }

    // MARK: - Masking, limits, handshake

    @Test(arguments: ConformanceTargetKind.allCases)
    func unmaskedFramesFailWith1002(kind: ConformanceTargetKind) async throws {
        try await kind.withTarget { target in
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x1, payload: Array(Self.ping.utf8), mask: nil),
                code: 1002,
                "an unmasked text"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x9, payload: [1], mask: nil),
                code: 1002,
                "an unmasked ping: not answered"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x8, payload: [0x03, 0xE8], mask: nil),
                code: 1002,
                "an unmasked close"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0xA, payload: [1], mask: nil),
                code: 1002,
                "an unmasked pong"
            )
        }
    }

    @Test(arguments: ConformanceTargetKind.allCases)
    func messagesOverTheLimitFailWith1009(kind: ConformanceTargetKind) async throws {
        try await kind.withTarget { target in
            let half = target.maxMessageBytes / 2 + 1
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x2, payload: [UInt8](repeating: 1, count: half), fin: false)
                    + RawWebSocket.clientFrame(opcode: 0x0, payload: [UInt8](repeating: 1, count: half), fin: false)
                    + RawWebSocket.clientFrame(opcode: 0x0, payload: [UInt8](repeating: 1, count: half)),
                code: 1009,
                "a fragmented binary message over the limit"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x1, payload: Array(Self.textMessage(size: half).utf8), fin: false)
                    + RawWebSocket.clientFrame(opcode: 0x0, payload: [UInt8](repeating: 0x20, count: half)),
                code: 1009,
                "a fragmented text message over the limit"
            )
            try await expectFailure(
                target,
                sending: RawWebSocket.clientFrame(opcode: 0x2, payload: [UInt8](repeating: 1, count: target.maxMessageBytes + 1)),
                code: 1009,
                "one frame over the limit"
            )
        }
    }

    @Test(arguments: ConformanceTargetKind.allCases)
    func malformedHandshakesAreRefused(kind: ConformanceTargetKind) async throws {
        try await kind.withTarget { target in
            let noKey = RawWebSocket.handshakeRequest(
                port: target.port,
                path: target.path,
                query: target.query,
                omit: ["Sec-WebSocket-Key"]
            )
            let (_, noKeyHead) = try await RawWebSocket.open(port: target.port, request: noKey)
            #expect(Self.status(noKeyHead).map { (400..<500).contains($0) } == true, "no Sec-WebSocket-Key: a 4xx; got \(noKeyHead)")

            for badKey in ["short", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZQ=!", "dGhlIHNhbXBsZSBub25j*Q=="] {
                let request = RawWebSocket.handshakeRequest(
                    port: target.port,
                    path: target.path,
                    query: target.query,
                    replace: ["Sec-WebSocket-Key": badKey]
                )
                let (_, head) = try await RawWebSocket.open(port: target.port, request: request)
                #expect(Self.status(head) == 400, "Sec-WebSocket-Key \(badKey): 400; got \(head)")
            }

            let version8 = RawWebSocket.handshakeRequest(
                port: target.port,
                path: target.path,
                query: target.query,
                replace: ["Sec-WebSocket-Version": "8"]
            )
            let (_, version8Head) = try await RawWebSocket.open(port: target.port, request: version8)
            #expect(Self.status(version8Head).map { (400..<500).contains($0) } == true, "version 8: a 4xx; got \(version8Head)")
            #expect(
                version8Head.lowercased().contains("\r\nsec-websocket-version: 13\r\n"),
                "version 8: the answer names the version the server speaks; got \(version8Head)"
            )

            // Elsewhere than the WebSocket path: not upgraded, and answered.
            let elsewhere = RawWebSocket.handshakeRequest(port: target.port, path: target.path + "-elsewhere", query: target.query)
            let (_, elsewhereHead) = try await RawWebSocket.open(port: target.port, request: elsewhere)
            #expect(Self.status(elsewhereHead).map { (400..<500).contains($0) } == true, "another path: a 4xx; got \(elsewhereHead)")

            // The same request, well-formed, is upgraded.
            _ = try await connect(target)
        }
    }

    /// The status code of an HTTP response head.
    static func status(_ head: String) -> Int? {
        let parts = head.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1.") else { return nil }
        return Int(parts[1])
    }
}
