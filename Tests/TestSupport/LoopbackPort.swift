import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A loopback TCP port that nothing listens on, for a server a test starts.
///
/// It is taken below the kernel's ephemeral range, where outgoing connections get their local
/// ports: the tests open thousands, and one of them could take a port from that range before
/// the server binds it. No port is handed out twice in one process; another process could still
/// take it in between, which is unlikely enough for tests.
public func unusedPort() throws -> Int {
    let low = ephemeralPortRangeStart() ?? 32_768
    if low > 10_001 {
        for _ in 0..<1_000 {
            let port = Int.random(in: 10_000..<low)
            guard handedOut.withLock({ $0.insert(port).inserted }) else { continue }
            if let bound = try? bind(port: port), bound == port { return port }
        }
    }
    return try bind(port: 0)
}

private let handedOut = Mutex<Set<Int>>([])

/// The first port of `net.ipv4.ip_local_port_range`.
private func ephemeralPortRangeStart() -> Int? {
    guard let range = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8) else { return nil }
    return range.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first.flatMap { Int($0) }
}

/// Binds a socket to `127.0.0.1:port` (0: any free port), releases it, and returns the port it got.
private func bind(port: Int) throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket() failed") }
    defer { close(fd) }
    var address = loopbackAddress(port: port)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, length) }
    }
    guard bound == 0 else { throw TestFailure("bind() failed") }
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { throw TestFailure("getsockname() failed") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
public func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    return connectToLoopback(fd, port: port) == 0
}

/// `connect(2)` of the TCP socket `fd` to `127.0.0.1:port`: its result (0, or -1 with `errno`
/// set; `EINPROGRESS` for a non-blocking socket still connecting).
public func connectToLoopback(_ fd: Int32, port: Int) -> Int32 {
    var address = loopbackAddress(port: port)
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
}

private func loopbackAddress(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return address
}
