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
    private var process: ChildProcess?

    /// Starts a server on a free loopback port, in a fresh temporary directory.
    public init(arguments: [String] = []) throws {
        self.port = try unusedPort()
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
                "--port", "\(self.port)", "--bind", "127.0.0.1", "--dir", self.directory.path,
                "--save", "", "--appendonly", "no", "--enable-debug-command", "yes", "--daemonize", "no",
                "--logfile", self.directory.appendingPathComponent("redis.log").path,
                "--pidfile", self.directory.appendingPathComponent("redis.pid").path,
            ] + self.extraArguments
        // A child with an empty signal mask, so that SIGTERM stops it; output in its log file.
        self.process = try ChildProcess(binary, arguments, environment: ProcessInfo.processInfo.environment)
        for _ in 0..<400 {
            if canConnect(port: self.port) { return }
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

    /// Freezes the server where it is (SIGSTOP) until ``resume()``: its connections stay open
    /// and nothing is answered, as with a server that hangs.
    public func pause() {
        if let pid = self.process?.pid { Glibc.kill(pid, SIGSTOP) }
    }

    /// Lets a server frozen by ``pause()`` run again (SIGCONT).
    public func resume() {
        if let pid = self.process?.pid { Glibc.kill(pid, SIGCONT) }
    }

    private func signal(_ signal: Int32) {
        self.process?.stop(signal)
        self.process = nil
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
