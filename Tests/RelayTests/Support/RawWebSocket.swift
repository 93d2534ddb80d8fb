import Foundation
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A WebSocket client over a plain POSIX socket, for conformance tests: it writes whatever
/// bytes it is given (frames built with ``clientFrame(opcode:payload:fin:rsv:mask:)``, masked
/// or not, well-formed or not) and parses the server's frames without judging them.
///
/// Every blocking call runs on a thread of its own (never on the Swift concurrency pool, which
/// may also run the server under test) and every read is bounded by a timeout.
final class RawWebSocket: @unchecked Sendable {
    /// A frame from the server, as it came.
    struct Frame: Sendable, Equatable, CustomStringConvertible {
        var fin: Bool
        /// The three reserved bits, in the low bits (RSV1 = 4).
        var rsv: UInt8
        var opcode: UInt8
        var masked: Bool
        var payload: [UInt8]

        var isClose: Bool { self.opcode == 0x8 }

        /// The close code of a close frame that has one.
        var closeCode: UInt16? {
            guard self.isClose, self.payload.count >= 2 else { return nil }
            return UInt16(self.payload[0]) << 8 | UInt16(self.payload[1])
        }

        /// The payload of a text frame, as a string.
        var text: String? {
            self.opcode == 0x1 ? String(decoding: self.payload, as: UTF8.self) : nil
        }

        /// The `type` of a text frame holding a JSON object.
        var jsonType: String? {
            guard self.opcode == 0x1 else { return nil }
            return JSON(parsing: self.payload)?["type"].string
        }

        var description: String {
            let body = self.text.map { $0.count > 80 ? "\($0.prefix(80))…" : $0 } ?? "\(self.payload.count) bytes"
            return
                "frame(op \(self.opcode)\(self.fin ? "" : " no-fin")\(self.rsv != 0 ? " rsv \(self.rsv)" : "")\(self.masked ? " masked" : ""), \(self.closeCode.map { "code \($0), " } ?? "")\(body))"
        }
    }

    /// The outcome of a read.
    enum Read: Sendable, Equatable, CustomStringConvertible {
        case frame(Frame)
        /// The server closed the TCP connection (or reset it).
        case ended
        /// Nothing complete arrived in time.
        case timedOut

        var description: String {
            switch self {
            case .frame(let frame): "\(frame)"
            case .ended: "the end of the connection"
            case .timedOut: "nothing (timed out)"
            }
        }
    }

    private let fd: Int32
    private let lock = NSLock()
    /// Bytes read but not yet parsed into a frame.
    private var pending: [UInt8] = []

    private init(fd: Int32) {
        self.fd = fd
    }

    deinit { Glibc.close(self.fd) }

    // MARK: - Connecting

    /// The handshake request for `path` (and `?query`), with the headers a client sends;
    /// `omit` leaves headers out (by name), `replace` changes their values.
    static func handshakeRequest(
        port: Int,
        path: String,
        query: String?,
        omit: Set<String> = [],
        replace: [String: String] = [:]
    ) -> String {
        let headers: [(String, String)] = [
            ("Host", "127.0.0.1:\(port)"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ]
        var request = "GET \(path)\(query.map { "?\($0)" } ?? "") HTTP/1.1\r\n"
        for (name, value) in headers where !omit.contains(name) {
            request += "\(name): \(replace[name] ?? value)\r\n"
        }
        return request + "\r\n"
    }

    /// Connects to 127.0.0.1:`port` and sends `bytes` (whatever they are), reading nothing.
    static func connect(port: Int, sending bytes: [UInt8], timeout: Duration = .seconds(10)) async throws -> RawWebSocket {
        try await runOnOwnThread { try Self.connectBlocking(port: port, sending: bytes, timeout: timeout) }
    }

    private static func connectBlocking(port: Int, sending bytes: [UInt8], timeout: Duration) throws -> RawWebSocket {
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket(): errno \(errno)") }
        let socket = RawWebSocket(fd: fd)
        var seconds = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &seconds, socklen_t(MemoryLayout<timeval>.size))
        var noDelay: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, socklen_t(MemoryLayout<Int32>.size))
        guard connectToLoopback(fd, port: port) == 0 else { throw TestFailure("connect(): errno \(errno)") }
        try socket.sendBlocking(bytes)
        return socket
    }

    /// Connects to 127.0.0.1:`port`, sends `request` and reads the response head.
    /// - Returns: the socket (positioned after the head) and the head's text.
    static func open(port: Int, request: String, timeout: Duration = .seconds(10)) async throws -> (RawWebSocket, String) {
        try await runOnOwnThread {
            let socket = try Self.connectBlocking(port: port, sending: Array(request.utf8), timeout: timeout)
            return (socket, try socket.readHeadBlocking(timeout: timeout))
        }
    }

    /// Reads the next HTTP response head (an interim one such as `100 Continue` included).
    /// - Returns: the head's text; what follows it stays unread.
    func readHead(timeout: Duration = .seconds(10)) async throws -> String {
        try await runOnOwnThread { try self.readHeadBlocking(timeout: timeout) }
    }

    private func readHeadBlocking(timeout: Duration) throws -> String {
        // The head ends at the first blank line; what follows stays in `pending`.
        let deadline = ContinuousClock.now + timeout
        while true {
            if let end = self.pending.firstRange(of: [13, 10, 13, 10]) {
                let head = String(decoding: self.pending[..<end.upperBound], as: UTF8.self)
                self.pending.removeSubrange(..<end.upperBound)
                return head
            }
            switch self.receive(until: deadline) {
            case .data: continue
            case .ended:
                throw TestFailure("the connection ended before the response head: \(String(decoding: self.pending, as: UTF8.self))")
            case .timedOut: throw TestFailure("no response head within \(timeout)")
            }
        }
    }

    /// Connects and upgrades; throws unless the server answers 101.
    static func connect(port: Int, path: String, query: String?, timeout: Duration = .seconds(10)) async throws -> RawWebSocket {
        let (socket, head) = try await Self.open(
            port: port,
            request: Self.handshakeRequest(port: port, path: path, query: query),
            timeout: timeout
        )
        guard head.hasPrefix("HTTP/1.1 101") else { throw TestFailure("the upgrade was refused: \(head)") }
        return socket
    }

    // MARK: - Writing

    /// The masking key of ``clientFrame(opcode:payload:fin:rsv:mask:)``'s frames.
    static let defaultMask: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]

    /// A client frame: `mask` nil makes it unmasked (which a server must refuse).
    static func clientFrame(
        opcode: UInt8,
        payload: [UInt8] = [],
        fin: Bool = true,
        rsv: UInt8 = 0,
        mask: [UInt8]? = RawWebSocket.defaultMask
    ) -> [UInt8] {
        var frame: [UInt8] = [(fin ? 0x80 : 0) | (rsv & 0x7) << 4 | (opcode & 0xF)]
        let maskBit: UInt8 = mask == nil ? 0 : 0x80
        switch payload.count {
        case 0...125:
            frame.append(maskBit | UInt8(payload.count))
        case 126...0xFFFF:
            frame.append(maskBit | 126)
            frame += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        default:
            frame.append(maskBit | 127)
            frame += (0..<8).reversed().map { UInt8((UInt64(payload.count) >> (8 * UInt64($0))) & 0xFF) }
        }
        guard let mask else { return frame + payload }
        frame += mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        return frame
    }

    /// A masked text frame carrying `text`.
    static func text(_ text: String, fin: Bool = true) -> [UInt8] {
        Self.clientFrame(opcode: 0x1, payload: Array(text.utf8), fin: fin)
    }

    /// A masked close frame: no payload when `code` is nil.
    static func close(code: UInt16?, reason: [UInt8] = []) -> [UInt8] {
        let payload = code.map { [UInt8($0 >> 8), UInt8($0 & 0xFF)] + reason } ?? []
        return Self.clientFrame(opcode: 0x8, payload: payload)
    }

    /// Writes `bytes` (all of them, in one call to the kernel where it can).
    func send(_ bytes: [UInt8]) async throws {
        try await runOnOwnThread { try self.sendBlocking(bytes) }
    }

    /// Writes `bytes` in pieces of `chunk` bytes, one system call each (TCP_NODELAY is set, so
    /// the server sees frames arrive piecemeal).
    func send(_ bytes: [UInt8], inChunksOf chunk: Int) async throws {
        try await runOnOwnThread {
            var start = 0
            while start < bytes.count {
                let end = min(start + chunk, bytes.count)
                try self.sendBlocking(Array(bytes[start..<end]))
                start = end
            }
        }
    }

    private func sendBlocking(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let count = bytes.withUnsafeBytes { Glibc.send(self.fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw TestFailure("send(): errno \(errno)") }
            sent += count
        }
    }

    /// Ends the client's side of TCP (a FIN, as when a client process exits), without a close frame.
    func shutdownWrite() {
        _ = Glibc.shutdown(self.fd, Int32(SHUT_WR))
    }

    // MARK: - Reading

    /// The next frame, the end of the connection, or `.timedOut` after `timeout`.
    func read(timeout: Duration = .seconds(20)) async throws -> Read {
        try await runOnOwnThread {
            let deadline = ContinuousClock.now + timeout
            while true {
                if let frame = self.lock.withLock({ Self.parse(&self.pending) }) { return .frame(frame) }
                switch self.receive(until: deadline) {
                case .data: continue
                case .ended: return .ended
                case .timedOut: return .timedOut
                }
            }
        }
    }

    /// Every frame until the server ends the connection; throws if it is still open after `timeout`.
    func readToEnd(timeout: Duration = .seconds(20)) async throws -> [Frame] {
        var frames: [Frame] = []
        let deadline = ContinuousClock.now + timeout
        while true {
            let left = deadline - ContinuousClock.now
            switch try await self.read(timeout: max(left, .zero)) {
            case .frame(let frame): frames.append(frame)
            case .ended: return frames
            case .timedOut: throw TestFailure("the connection is still open after \(timeout); frames: \(frames)")
            }
        }
    }

    /// The next `count` bytes, unparsed (a response's body after ``readHead(timeout:)``).
    func bytes(_ count: Int, timeout: Duration = .seconds(10)) async throws -> [UInt8] {
        try await runOnOwnThread {
            let deadline = ContinuousClock.now + timeout
            while self.lock.withLock({ self.pending.count }) < count {
                guard case .data = self.receive(until: deadline) else { throw TestFailure("fewer than \(count) bytes came") }
            }
            return self.lock.withLock {
                defer { self.pending.removeSubrange(..<count) }
                return Array(self.pending[..<count])
            }
        }
    }

    /// Every byte until the server ends the connection, unparsed; throws if it is still open
    /// after `timeout`.
    func bytesToEnd(timeout: Duration = .seconds(20)) async throws -> [UInt8] {
        try await runOnOwnThread {
            let deadline = ContinuousClock.now + timeout
            while true {
                switch self.receive(until: deadline) {
                case .data: continue
                case .ended: return self.lock.withLock { self.pending }
                case .timedOut:
                    throw TestFailure("the connection is still open after \(timeout): \(String(decoding: self.pending, as: UTF8.self))")
                }
            }
        }
    }

    private enum Receive { case data, ended, timedOut }

    /// Reads what is available into `pending`, waiting at most until `deadline`.
    private func receive(until deadline: ContinuousClock.Instant) -> Receive {
        let left = deadline - ContinuousClock.now
        guard left > .zero else { return .timedOut }
        var poller = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
        let milliseconds = Int32(min(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1, 60_000))
        let ready = Glibc.poll(&poller, 1, milliseconds)
        if ready == 0 { return .timedOut }
        if ready < 0 { return errno == EINTR ? .data : .ended }
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let count = chunk.withUnsafeMutableBytes { Glibc.recv(self.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if count > 0 {
            self.lock.withLock { self.pending += chunk[0..<count] }
            return .data
        }
        if count < 0, errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return .data }
        return .ended  // 0: closed by the server; < 0: reset
    }

    /// Removes the first complete frame from `bytes`, if there is one.
    static func parse(_ bytes: inout [UInt8]) -> Frame? {
        guard bytes.count >= 2 else { return nil }
        let masked = bytes[1] & 0x80 != 0
        var length = Int(bytes[1] & 0x7F)
        var start = 2
        if length == 126 {
            guard bytes.count >= 4 else { return nil }
            length = Int(bytes[2]) << 8 | Int(bytes[3])
            start = 4
        } else if length == 127 {
            guard bytes.count >= 10 else { return nil }
            length = bytes[2..<10].reduce(0) { $0 << 8 | Int($1) }
            start = 10
        }
        let mask = masked ? Array(bytes[min(start, bytes.count)..<min(start + 4, bytes.count)]) : []
        if masked { start += 4 }
        guard bytes.count >= start + length else { return nil }
        var payload = Array(bytes[start..<(start + length)])
        if masked, mask.count == 4 {
            for index in payload.indices { payload[index] ^= mask[index % 4] }
        }
        let frame = Frame(fin: bytes[0] & 0x80 != 0, rsv: (bytes[0] >> 4) & 0x7, opcode: bytes[0] & 0xF, masked: masked, payload: payload)
        bytes.removeSubrange(..<(start + length))
        return frame
    }
}
