import Foundation
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// One HTTP/1.1 request and its response on a fresh loopback connection (`Connection: close`),
/// over a plain POSIX socket so that the tests control every byte that is sent.
///
/// Blocking socket calls run on a thread of their own, never on the Swift concurrency pool (which
/// has one thread per core and also runs the relay's handlers). Every exchange is bounded by a
/// deadline: it throws ``HTTPExchange/Failure`` rather than hang.
enum HTTPExchange {
    struct Response: Sendable {
        var status: Int
        /// Header names lowercased; a repeated header keeps its last value.
        var headers: [String: String]
        var body: [UInt8]
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Sends `request` (a complete HTTP/1.1 message) to `127.0.0.1:port` and reads one response.
    static func perform(port: Int, request: [UInt8], timeout: Duration) async throws -> Response {
        try await runOnOwnThread {
            try exchange(port: port, request: request, deadline: ContinuousClock.now + timeout)
        }
    }

    /// Builds a request message. A body gets a `Content-Length` unless `headers` has a
    /// `Transfer-Encoding` (then the body must already be encoded that way).
    static func message(
        method: String,
        path: String,
        port: Int,
        headers: [String: String],
        body: [UInt8]?
    ) -> [UInt8] {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        let names = Set(headers.keys.map { $0.lowercased() })
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) {
            head += "\(name): \(value)\r\n"
        }
        if !names.contains("transfer-encoding"), !names.contains("content-length"),
            body != nil || ["POST", "PUT", "PATCH"].contains(method)
        {
            head += "Content-Length: \(body?.count ?? 0)\r\n"
        }
        head += "\r\n"
        return Array(head.utf8) + (body ?? [])
    }

    /// `body` in chunked transfer coding, `chunkSize` bytes a chunk.
    static func chunked(_ body: [UInt8], chunkSize: Int = 4096) -> [UInt8] {
        var output: [UInt8] = []
        var start = 0
        while start < body.count {
            let end = min(start + chunkSize, body.count)
            output += Array(String(end - start, radix: 16).utf8) + [13, 10] + body[start..<end] + [13, 10]
            start = end
        }
        return output + Array("0\r\n\r\n".utf8)
    }

    // MARK: - The exchange

    private static func exchange(port: Int, request: [UInt8], deadline: ContinuousClock.Instant) throws -> Response {
        let socket = try Socket(port: port, deadline: deadline)
        defer { socket.close() }
        var received: [UInt8] = []
        var sent = 0
        var peerClosed = false
        // Send, reading whatever arrives meanwhile: a server may answer (413) before it has read
        // the whole body, and then stop reading.
        sending: while sent < request.count {
            let ready = try socket.wait(for: Int16(POLLOUT | POLLIN))
            if ready & Int16(POLLIN) != 0 {
                if try socket.receive(into: &received) == 0 {
                    peerClosed = true
                    break sending
                }
                if try parse(received, atEOF: false) != nil { break sending }
            }
            if ready & Int16(POLLOUT | POLLERR | POLLHUP) != 0 {
                switch socket.send(request, from: sent) {
                case .sent(let count): sent += count
                case .wouldBlock: continue
                case .peerGone: break sending
                }
            }
        }
        while true {
            if let response = try parse(received, atEOF: peerClosed, toHEAD: request.starts(with: Array("HEAD ".utf8))) {
                return response
            }
            if peerClosed {
                throw Failure(description: "the connection closed before a complete response (\(received.count) bytes read)")
            }
            _ = try socket.wait(for: Int16(POLLIN))
            peerClosed = try socket.receive(into: &received) == 0
        }
    }

    /// The first complete response in `bytes` after any 1xx responses, `nil` if more bytes are needed.
    /// A response to `HEAD` has no body, whatever its `Content-Length` says.
    static func parse(_ bytes: [UInt8], atEOF: Bool, toHEAD: Bool = false) throws -> Response? {
        var start = 0
        while true {
            guard let headerEnd = find([13, 10, 13, 10], in: bytes, from: start) else {
                return nil
            }
            let head = String(decoding: bytes[start..<headerEnd], as: UTF8.self)
            var lines = head.components(separatedBy: "\r\n")
            let statusLine = lines.removeFirst().split(separator: " ", maxSplits: 2)
            guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/1."), let status = Int(statusLine[1]) else {
                throw Failure(description: "not an HTTP/1.1 response: \(head.prefix(200))")
            }
            var headers: [String: String] = [:]
            for line in lines {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            let bodyStart = headerEnd + 4
            if (100..<200).contains(status) {
                start = bodyStart
                continue
            }
            if status == 204 || status == 304 || toHEAD {
                return Response(status: status, headers: headers, body: [])
            }
            if headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
                guard let body = try dechunk(bytes, from: bodyStart) else { return nil }
                return Response(status: status, headers: headers, body: body)
            }
            if let lengthText = headers["content-length"] {
                guard let length = Int(lengthText), length >= 0 else {
                    throw Failure(description: "bad Content-Length: \(lengthText)")
                }
                guard bytes.count - bodyStart >= length else { return nil }
                return Response(status: status, headers: headers, body: Array(bytes[bodyStart..<(bodyStart + length)]))
            }
            return atEOF ? Response(status: status, headers: headers, body: Array(bytes[bodyStart...])) : nil
        }
    }

    private static func dechunk(_ bytes: [UInt8], from start: Int) throws -> [UInt8]? {
        var body: [UInt8] = []
        var position = start
        while true {
            guard let lineEnd = find([13, 10], in: bytes, from: position) else { return nil }
            let sizeText =
                String(decoding: bytes[position..<lineEnd], as: UTF8.self)
                .split(separator: ";", maxSplits: 1).first.map(String.init) ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size >= 0 else {
                throw Failure(description: "bad chunk size: \(sizeText)")
            }
            position = lineEnd + 2
            if size == 0 {
                // Optional trailers, then an empty line.
                while true {
                    guard let end = find([13, 10], in: bytes, from: position) else { return nil }
                    if end == position { return body }
                    position = end + 2
                }
            }
            guard bytes.count >= position + size + 2 else { return nil }
            body += bytes[position..<(position + size)]
            position += size + 2
        }
    }

    private static func find(_ needle: [UInt8], in bytes: [UInt8], from start: Int) -> Int? {
        guard bytes.count >= needle.count, start <= bytes.count - needle.count else { return nil }
        var index = start
        while index <= bytes.count - needle.count {
            if bytes[index] == needle[0], Array(bytes[index..<(index + needle.count)]) == needle { return index }
            index += 1
        }
        return nil
    }
}

/// A non-blocking TCP socket to a loopback port whose waits end at a deadline.
private struct Socket {
    enum SendResult {
        case sent(Int)
        case wouldBlock
        case peerGone
    }

    let fd: Int32
    let deadline: ContinuousClock.Instant

    init(port: Int, deadline: ContinuousClock.Instant) throws {
        self.deadline = deadline
        fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw HTTPExchange.Failure(description: "socket(): errno \(errno)") }
        let result = connectToLoopback(fd, port: port)
        if result != 0 {
            guard errno == EINPROGRESS else {
                let error = errno
                Glibc.close(fd)
                throw HTTPExchange.Failure(description: "connect to port \(port): errno \(error)")
            }
            do {
                _ = try wait(for: Int16(POLLOUT))
            } catch {
                Glibc.close(fd)
                throw error
            }
            var socketError: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &socketError, &length)
            guard socketError == 0 else {
                Glibc.close(fd)
                throw HTTPExchange.Failure(description: "connect to port \(port): errno \(socketError)")
            }
        }
    }

    func close() {
        Glibc.close(fd)
    }

    /// Waits until one of `events` (or an error or hang-up) is ready; throws at the deadline.
    func wait(for events: Int16) throws -> Int16 {
        while true {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { throw HTTPExchange.Failure(description: "timed out: no complete response in time") }
            let (seconds, attoseconds) = remaining.components
            let milliseconds = Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1)
            var descriptor = pollfd(fd: fd, events: events, revents: 0)
            let result = poll(&descriptor, 1, milliseconds)
            if result > 0 { return descriptor.revents }
            if result < 0, errno != EINTR { throw HTTPExchange.Failure(description: "poll(): errno \(errno)") }
        }
    }

    func send(_ bytes: [UInt8], from offset: Int) -> SendResult {
        let count = bytes.withUnsafeBytes { buffer in
            Glibc.send(fd, buffer.baseAddress! + offset, buffer.count - offset, Int32(MSG_NOSIGNAL))
        }
        if count >= 0 { return .sent(count) }
        switch errno {
        case EAGAIN, EWOULDBLOCK, EINTR: return .wouldBlock
        default: return .peerGone
        }
    }

    /// Appends what is available to `buffer`; returns the count, 0 at the end of the stream.
    func receive(into buffer: inout [UInt8]) throws -> Int {
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 {
                buffer += chunk[0..<count]
                return count
            }
            if count == 0 { return 0 }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return -1
            // The peer reset the connection: whatever it sent before is in `buffer`.
            case ECONNRESET: return 0
            default: throw HTTPExchange.Failure(description: "recv(): errno \(errno)")
            }
        }
    }
}

/// Runs blocking `work` on a new thread and returns its result.
func runOnOwnThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try work() })
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
}
