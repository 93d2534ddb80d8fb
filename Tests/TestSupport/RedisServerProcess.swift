import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A private `redis-server` for tests that kill, pause or restart their server, so that they
/// don't disturb tests sharing the suite's server.
public final class RedisServerProcess: @unchecked Sendable {
    public let port: Int
    public let directory: URL
    private let extraArguments: [String]
    private var pid: pid_t?

    /// Starts a server on a free loopback port, in a fresh temporary directory.
    public init(arguments: [String] = []) throws {
        self.port = try Self.freePort()
        // Under the suite's own Redis directory when `make test` runs it, so that its clean-up
        // stops this server too should the test process die first.
        let parent =
            ProcessInfo.processInfo.environment["REDIS_TEST_DIR"].map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.temporaryDirectory
        self.directory = parent.appendingPathComponent("redis-\(UUID().uuidString.prefix(8))")
        self.extraArguments = arguments
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        try self.start()
    }

    deinit {
        self.stop()
        try? FileManager.default.removeItem(at: self.directory)
    }

    public var url: String { "redis://127.0.0.1:\(self.port)" }

    /// Starts the server (again, on the same port and directory) and waits until it accepts connections.
    public func start() throws {
        let binary = ProcessInfo.processInfo.environment["REDIS_SERVER_BIN"] ?? "/usr/bin/redis-server"
        let arguments =
            [
                binary, "--port", "\(self.port)", "--bind", "127.0.0.1", "--dir", self.directory.path,
                "--save", "", "--appendonly", "no", "--enable-debug-command", "yes", "--daemonize", "no",
                "--logfile", self.directory.appendingPathComponent("redis.log").path,
                "--pidfile", self.directory.appendingPathComponent("redis.pid").path,
            ] + self.extraArguments
        // posix_spawn and waitpid rather than Foundation's Process, whose waitUntilExit can wait
        // forever on Linux; the child's output goes to /dev/null so it never holds the test's open.
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd in Int32(0)...2 {
            posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
        }
        // The child must not inherit the test process's blocked signals, or SIGTERM would not stop it.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var argv = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, binary, &actions, &attributes, &argv, environ)
        guard status == 0 else { throw TestFailure("cannot start \(binary): error \(status)") }
        self.pid = pid
        for _ in 0..<400 {
            if Self.canConnect(port: self.port) { return }
            usleep(25_000)
        }
        throw TestFailure("redis-server on port \(self.port) did not start")
    }

    /// Stops the server at once (SIGKILL: like a crash, nothing is saved at exit).
    public func kill() {
        self.signal(SIGKILL)
    }

    /// Stops the server cleanly (SIGTERM).
    public func stop() {
        self.signal(SIGTERM)
    }

    private func signal(_ signal: Int32) {
        guard let pid = self.pid else { return }
        Glibc.kill(pid, signal)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        self.pid = nil
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { throw TestFailure("bind() failed") }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw TestFailure("getsockname() failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}

/// A failure in a test's own set-up.
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The suite's shared Redis, from `REDIS_HOST` / `REDIS_PORT` (as `make test` sets them).
public enum TestRedis {
    public static var host: String { ProcessInfo.processInfo.environment["REDIS_HOST"] ?? "127.0.0.1" }
    public static var port: Int { Int(ProcessInfo.processInfo.environment["REDIS_PORT"] ?? "") ?? 6379 }
    public static var url: String { "redis://\(host):\(port)" }

    /// A fresh prefix for the keys of one test, so tests can share one server.
    public static func uniqueName(_ prefix: String = "t") -> String {
        "\(prefix)-\(UUID().uuidString.prefix(12).lowercased())"
    }
}
