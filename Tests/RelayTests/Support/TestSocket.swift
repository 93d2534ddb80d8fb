import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import NIOWebSocket
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A test WebSocket client of the relay's `GET /ws`, built on HummingbirdWSClient.
///
/// The socket runs in a task of its own; every text frame received is parsed as JSON and kept, in
/// order, in ``frames``. Every wait is bounded: it throws `TestFailure` rather than hang.
final class TestSocket: @unchecked Sendable {
    private let lock = NSLock()
    private var received: [JSON] = []
    private var unparsable: [String] = []
    private var binaryCount = 0
    private var writer: WebSocketOutboundWriter?
    private var ended = false
    private var serverCloseCode: Int?
    private var serverCloseReason: String?
    private var failure: (any Error)?
    private var task: Task<Void, Never>?
    let label: String

    private init(label: String) {
        self.label = label
    }

    /// Connects to `ws://127.0.0.1:<port>/ws`, with `?token=` (or, `viaHeader`, an
    /// `Authorization: Bearer` header; `nil` token: neither) and waits until the upgrade is done.
    /// - Parameter waitForHello: also waits for the `hello` frame.
    static func connect(
        _ relay: RelayTestClient,
        token: String?,
        viaHeader: Bool = false,
        waitForHello: Bool = true,
        label: String = "socket",
        timeout: Duration = .seconds(30)
    ) async throws -> TestSocket {
        let socket = TestSocket(label: label)
        var configuration = WebSocketClientConfiguration(maxFrameSize: 1 << 20, closeTimeout: .seconds(2))
        var url = "ws://127.0.0.1:\(relay.port)/ws"
        if let token {
            if viaHeader {
                configuration.additionalHeaders = [.authorization: "Bearer \(token)"]
            } else {
                url += "?token=\(token)"
            }
        }
        var logger = Logger(label: "test-socket")
        logger.logLevel = .critical
        socket.task = Task { [configuration, url, logger] in
            do {
                let frame = try await WebSocketClient.connect(url: url, configuration: configuration, logger: logger) {
                    inbound,
                    outbound,
                    _ in
                    socket.lock.withLock { socket.writer = outbound }
                    for try await message in inbound.messages(maxSize: 1 << 22) {
                        switch message {
                        case .text(let text):
                            socket.lock.withLock {
                                if let json = JSON(parsing: Array(text.utf8)) {
                                    socket.received.append(json)
                                } else {
                                    socket.unparsable.append(text)
                                }
                            }
                        case .binary:
                            socket.lock.withLock { socket.binaryCount += 1 }
                        }
                    }
                }
                socket.lock.withLock {
                    if let frame {
                        socket.serverCloseCode = Int(closeCodeNumber(frame.closeCode))
                        socket.serverCloseReason = frame.reason
                    }
                }
            } catch {
                socket.lock.withLock { socket.failure = error }
            }
            socket.lock.withLock {
                socket.ended = true
                socket.writer = nil
            }
        }
        let deadline = ContinuousClock.now + timeout
        while true {
            let (ready, done, failure) = socket.lock.withLock { (socket.writer != nil, socket.ended, socket.failure) }
            if ready { break }
            if done {
                // Closed straight away (e.g. 4001): the socket still reports its close code.
                if let failure { throw TestFailure("\(label): WebSocket connect failed: \(failure)") }
                return socket
            }
            guard ContinuousClock.now < deadline else {
                socket.task?.cancel()
                throw TestFailure("\(label): WebSocket upgrade not done within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        if waitForHello {
            _ = try await socket.waitFor("hello", timeout: timeout) { $0["type"].string == "hello" }
        }
        return socket
    }

    // MARK: - State

    /// Every text frame received so far, parsed, in order.
    var frames: [JSON] { lock.withLock { received } }
    /// Text frames that were not JSON.
    var unparsableFrames: [String] { lock.withLock { unparsable } }
    /// How many binary messages arrived (the contract has none).
    var binaryFramesReceived: Int { lock.withLock { binaryCount } }
    /// The close code the server sent; `nil` while open (or if it closed without a close frame).
    var closeCode: Int? { lock.withLock { serverCloseCode } }
    var closeReason: String? { lock.withLock { serverCloseReason } }
    /// Whether the connection has ended (for whatever reason).
    var isClosed: Bool { lock.withLock { ended } }
    /// The error the client ended with, if any.
    var error: (any Error)? { lock.withLock { failure } }

    /// The events (frames with a `seq`) of `channel`, in the order received.
    func events(_ channel: String) -> [JSON] {
        frames.filter { $0["channel_id"].string == channel && $0["seq"].int != nil && !Self.answerTypes.contains($0["type"].string ?? "") }
    }

    /// The seqs of `channel`'s events, in the order received.
    func seqs(_ channel: String) -> [Int] {
        events(channel).map { $0["seq"].int ?? -1 }
    }

    /// Frame types that are answers, not events.
    static let answerTypes: Set<String> = ["hello", "ack", "error", "read_ok", "pong", "resumed"]

    /// Forgets every frame received so far.
    func clearFrames() {
        lock.withLock { received.removeAll() }
    }

    // MARK: - Sending

    private func currentWriter() throws -> WebSocketOutboundWriter {
        guard let writer = lock.withLock({ self.writer }) else { throw TestFailure("\(label): the socket is closed") }
        return writer
    }

    /// Sends `json` (a JSON object) as one text frame.
    func send(json: [String: Any]) async throws {
        let data = try JSONSerialization.data(withJSONObject: json)
        try await sendRaw(text: String(decoding: data, as: UTF8.self))
    }

    /// Sends `text` as one text frame, unfragmented, whatever its size.
    func sendRaw(text: String) async throws {
        try await currentWriter().write(.text(text))
    }

    /// Sends `bytes` as one binary frame.
    func sendBinary(_ bytes: [UInt8]) async throws {
        try await currentWriter().write(.binary(ByteBuffer(bytes: bytes)))
    }

    // MARK: - Waiting

    /// Waits until a frame received after the first `from` frames matches `predicate`; returns it.
    @discardableResult
    func waitFor(
        _ what: String,
        from: Int = 0,
        timeout: Duration = .seconds(10),
        _ predicate: (JSON) -> Bool
    ) async throws -> JSON {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (frames, ended) = lock.withLock { (received, self.ended) }
            if from < frames.count, let match = frames[from...].first(where: predicate) { return match }
            guard !ended else {
                throw TestFailure("\(label): closed (code \(closeCode.map(String.init) ?? "none")) before \(what); got \(frames.suffix(5))")
            }
            guard ContinuousClock.now < deadline else {
                throw TestFailure("\(label): timed out after \(timeout) waiting for \(what); last frames: \(frames.suffix(5))")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Waits until `condition` holds over all frames received.
    func waitUntil(_ what: String, timeout: Duration = .seconds(10), _ condition: ([JSON]) -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            let frames = self.frames
            if condition(frames) { return }
            guard ContinuousClock.now < deadline else {
                throw TestFailure(
                    "\(label): timed out after \(timeout) waiting until \(what); \(frames.count) frames, last: \(frames.suffix(3))"
                )
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Sends `json` and waits for the first frame after it that matches `answer`.
    func request(_ json: [String: Any], timeout: Duration = .seconds(10), answer: @escaping (JSON) -> Bool) async throws -> JSON {
        let start = frames.count
        try await send(json: json)
        return try await waitFor("answer to \(json)", from: start, timeout: timeout, answer)
    }

    /// Sends a ping and waits for a pong.
    func ping(timeout: Duration = .seconds(10)) async throws {
        _ = try await request(["type": "ping"], timeout: timeout) { $0["type"].string == "pong" }
    }

    /// Waits until the connection has ended; returns the server's close code (nil: no close frame).
    @discardableResult
    func waitForClose(timeout: Duration = .seconds(10)) async throws -> Int? {
        let deadline = ContinuousClock.now + timeout
        while !isClosed {
            guard ContinuousClock.now < deadline else { throw TestFailure("\(label): still open after \(timeout)") }
            try await Task.sleep(for: .milliseconds(10))
        }
        return closeCode
    }

    /// Closes from the client side (1000) and waits (bounded) for the end; cancels if need be.
    func close() async {
        if let writer = lock.withLock({ self.writer }) {
            try? await writer.close(.normalClosure, reason: nil)
        }
        let deadline = ContinuousClock.now + .seconds(3)
        while !isClosed, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        if !isClosed { task?.cancel() }
    }

    /// Drops the connection without a close handshake (the task is cancelled).
    func abort() {
        task?.cancel()
    }
}

/// The numeric value of a WebSocket close code.
func closeCodeNumber(_ code: WebSocketErrorCode) -> UInt16 {
    switch code {
    case .normalClosure: 1000
    case .goingAway: 1001
    case .protocolError: 1002
    case .unacceptableData: 1003
    case .dataInconsistentWithMessage: 1007
    case .policyViolation: 1008
    case .messageTooLarge: 1009
    case .missingExtension: 1010
    case .unexpectedServerError: 1011
    case .unknown(let value): value
    }
}

/// Runs `body` with sockets that are closed afterwards, whatever happens.
func withSockets<T>(_ body: (inout [TestSocket]) async throws -> T) async throws -> T {
    var sockets: [TestSocket] = []
    do {
        let result = try await body(&sockets)
        for socket in sockets { await socket.close() }
        return result
    } catch {
        for socket in sockets { socket.abort() }
        throw error
    }
}

/// Checks that `seqs` are exactly `expected`, reporting the first difference briefly.
func expectSeqs(_ seqs: [Int], _ expected: [Int], _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    if seqs == expected { return }
    let firstDifference =
        zip(seqs, expected).enumerated().first { $0.element.0 != $0.element.1 }.map(\.offset) ?? min(seqs.count, expected.count)
    let context =
        "index \(firstDifference): got \(Array(seqs[min(firstDifference, seqs.count)..<min(firstDifference + 5, seqs.count)])) expected \(Array(expected[min(firstDifference, expected.count)..<min(firstDifference + 5, expected.count)]))"
    Issue.record(
        "\(what): \(seqs.count) seqs, expected \(expected.count); first difference at \(context); duplicates: \(seqs.count - Set(seqs).count)",
        sourceLocation: sourceLocation
    )
}

// MARK: - A raw socket that never reads

/// A WebSocket over a plain POSIX socket: does the upgrade by hand (fixed `Sec-WebSocket-Key`),
/// with a small receive buffer, and then never reads until told to, so that the server's outbound
/// queue for it fills up.
final class StalledSocket: @unchecked Sendable {
    let fd: Int32

    /// Connects and upgrades; bytes read past the 101's head are kept in ``leftover``.
    /// - Parameters:
    ///   - token: sent as `?token=` (or, `viaHeader`, as `Authorization: Bearer`); `nil`: none.
    /// Connects and upgrades on a thread of its own: blocking calls must never run on the Swift
    /// concurrency pool, which also runs the in-process relay (2 cores: 2 threads).
    static func open(
        port: Int,
        token: String?,
        viaHeader: Bool = false,
        receiveBuffer: Int32? = 4096,
        timeout: Duration = .seconds(30)
    ) async throws -> StalledSocket {
        try await runOnOwnThread {
            try StalledSocket(port: port, token: token, viaHeader: viaHeader, receiveBuffer: receiveBuffer, timeout: timeout)
        }
    }

    /// ``open(port:token:viaHeader:receiveBuffer:timeout:)`` on the calling thread, which must
    /// not be one of the Swift concurrency pool's (use `runOnOwnThread`).
    static func openBlocking(port: Int, token: String?, timeout: Duration = .seconds(30)) throws -> StalledSocket {
        try StalledSocket(port: port, token: token, viaHeader: false, receiveBuffer: 65_536, timeout: timeout)
    }

    private init(port: Int, token: String?, viaHeader: Bool, receiveBuffer: Int32?, timeout: Duration) throws {
        fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket(): errno \(errno)") }
        // nil: the kernel's own, which grows as the client reads.
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var seconds = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &seconds, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &seconds, socklen_t(MemoryLayout<timeval>.size))
        guard connectToLoopback(fd, port: port) == 0 else {
            Glibc.close(fd)
            throw TestFailure("connect(): errno \(errno)")
        }
        let query = token.map { viaHeader ? "" : "?token=\($0)" } ?? ""
        let header = token.map { viaHeader ? "Authorization: Bearer \($0)\r\n" : "" } ?? ""
        let request =
            "GET /ws\(query) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + header
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        let bytes = Array(request.utf8)
        let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == bytes.count else {
            Glibc.close(fd)
            throw TestFailure("send(): errno \(errno)")
        }
        // Read the response head one byte at a time, so nothing after it is consumed.
        var head: [UInt8] = []
        while !(head.count >= 4 && Array(head.suffix(4)) == [13, 10, 13, 10]) {
            var byte: UInt8 = 0
            let count = Glibc.recv(fd, &byte, 1, 0)
            guard count == 1 else {
                Glibc.close(fd)
                throw TestFailure("the upgrade response ended early (errno \(errno)): \(String(decoding: head, as: UTF8.self))")
            }
            head.append(byte)
        }
        let text = String(decoding: head, as: UTF8.self)
        guard text.hasPrefix("HTTP/1.1 101") else {
            Glibc.close(fd)
            throw TestFailure("the upgrade was refused: \(text)")
        }
    }

    deinit { Glibc.close(fd) }

    /// Reads everything until the server closes the connection (or `timeout` passes with the
    /// connection still open). Returns the bytes read and whether the connection ended.
    func drain(timeout: Duration) async throws -> (bytes: [UInt8], ended: Bool) {
        try await self.read(timeout: timeout) { _ in false }
    }

    /// Reads until a close frame has arrived (or the connection ends, or `timeout` passes);
    /// returns everything read.
    func readUntilCloseFrame(timeout: Duration) async throws -> [UInt8] {
        try await self.read(timeout: timeout) { StalledSocket.closeCode(in: $0) != nil }.bytes
    }

    /// Reads until `done` holds for what was read, the connection ends, or `timeout` passes,
    /// `chunk` bytes at most per read and, with `pause`, sleeping that long after each: a client
    /// that reads, but slower than the server writes. Returns the bytes read and whether the
    /// connection ended.
    func read(
        timeout: Duration,
        chunk size: Int = 65_536,
        pause: Duration? = nil,
        until done: @escaping @Sendable ([UInt8]) -> Bool
    ) async throws -> (bytes: [UInt8], ended: Bool) {
        let fd = self.fd
        return try await runOnOwnThread {
            var seconds = timeval(tv_sec: 1, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &seconds, socklen_t(MemoryLayout<timeval>.size))
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: size)
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline, !done(bytes) {
                let count = chunk.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
                if count > 0 {
                    bytes += chunk[0..<count]
                    if let pause { usleep(UInt32(pause.components.attoseconds / 1_000_000_000_000)) }
                } else if count == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    // Closed by the server (0), or reset.
                    return (bytes, true)
                }
            }
            return (bytes, false)
        }
    }

    /// Sends what it can of `bytes` without blocking: the count sent (0 when the socket's buffer
    /// is full), or nil once the connection is closed or reset.
    func sendWithoutBlocking(_ bytes: ArraySlice<UInt8>) -> Int? {
        let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        if sent >= 0 { return sent }
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : nil
    }

    /// Sends a text frame, blocking until it is all sent.
    func sendText(_ text: String) throws {
        let frame = RawWebSocket.text(text)
        let sent = frame.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == frame.count else { throw TestFailure("send(text): errno \(errno)") }
    }

    /// Sends a close frame with `code`, masked as a client must.
    func sendClose(code: UInt16) throws {
        let mask: [UInt8] = [0x11, 0x22, 0x33, 0x44]
        let payload = [UInt8(code >> 8), UInt8(code & 0xff)]
        let frame = [0x88, 0x80 | UInt8(payload.count)] + mask + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        let sent = frame.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == frame.count else { throw TestFailure("send(close): errno \(errno)") }
    }

    /// The unmasked server frames in `bytes`: (opcode, payload); a truncated last frame is dropped.
    static func frames(in bytes: [UInt8]) -> [(opcode: UInt8, payload: [UInt8])] {
        var frames: [(UInt8, [UInt8])] = []
        var index = 0
        while index + 2 <= bytes.count {
            let opcode = bytes[index] & 0x0f
            var length = Int(bytes[index + 1] & 0x7f)
            var start = index + 2
            if length == 126 {
                guard start + 2 <= bytes.count else { break }
                length = Int(bytes[start]) << 8 | Int(bytes[start + 1])
                start += 2
            } else if length == 127 {
                guard start + 8 <= bytes.count else { break }
                length = bytes[start..<(start + 8)].reduce(0) { $0 << 8 | Int($1) }
                start += 8
            }
            guard start + length <= bytes.count else { break }
            frames.append((opcode, Array(bytes[start..<(start + length)])))
            index = start + length
        }
        return frames
    }

    /// The close code of the first close frame in `bytes`, if any.
    static func closeCode(in bytes: [UInt8]) -> Int? {
        guard let close = frames(in: bytes).first(where: { $0.opcode == 0x8 }), close.payload.count >= 2 else { return nil }
        return Int(close.payload[0]) << 8 | Int(close.payload[1])
    }
}
