import Foundation
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A child process started with `posix_spawn` (Foundation's `Process` can wait forever in
/// `waitUntilExit` on Linux), with an empty signal mask and default signal handlers, stdin from
/// `/dev/null` and stdout and stderr into temporary files. Waits are bounded polls of `waitpid`.
final class ChildProcess: @unchecked Sendable {
    enum Termination: Equatable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        var description: String {
            switch self {
            case .exited(let code): "exit status \(code)"
            case .signaled(let signal): "signal \(signal)"
            }
        }
    }

    let pid: pid_t
    let arguments: [String]
    private let outputPath: String
    private let errorPath: String
    private let lock = NSLock()
    private var termination: Termination?

    /// Starts `executable` with `arguments` and exactly `environment`.
    init(_ executable: String, _ arguments: [String], environment: [String: String]) throws {
        self.arguments = [executable] + arguments
        let directory = FileManager.default.temporaryDirectory.path
        let stem = "relay-test-\(UUID().uuidString.prefix(8))"
        outputPath = "\(directory)/\(stem).out"
        errorPath = "\(directory)/\(stem).err"

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, errorPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
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

        var argv = self.arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in envp { free(pointer) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, executable, &actions, &attributes, &argv, &envp)
        guard status == 0 else { throw TestFailure("cannot start \(executable): error \(status)") }
        self.pid = pid
    }

    deinit {
        if termination == nil {
            Glibc.kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        unlink(outputPath)
        unlink(errorPath)
    }

    /// What the process wrote to stdout so far.
    var standardOutput: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    /// What the process wrote to stderr so far.
    var standardError: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }

    /// How it ended, `nil` while it runs (reaps it if it has ended).
    var exitStatus: Termination? {
        lock.withLock {
            if let termination { return termination }
            var status: Int32 = 0
            guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
            let signal = status & 0x7f
            termination = signal == 0 ? .exited((status >> 8) & 0xff) : .signaled(signal)
            return termination
        }
    }

    /// Waits until the process ends; `nil` if it still runs after `timeout` (it is left running).
    func wait(timeout: Duration) async throws -> Termination? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let exitStatus { return exitStatus }
            guard ContinuousClock.now < deadline else { return nil }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Sends `signal` unless the process has ended.
    func send(_ signal: Int32) {
        if exitStatus == nil { Glibc.kill(pid, signal) }
    }

    /// Kills the process (SIGKILL) and reaps it.
    func killAndReap() {
        guard exitStatus == nil else { return }
        Glibc.kill(pid, SIGKILL)
        lock.withLock {
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            termination = .signaled(SIGKILL)
        }
    }

    /// Runs `executable` to its end, killing it if it runs longer than `timeout`.
    /// - Throws: `TestFailure` if it had to be killed.
    static func run(
        _ executable: String,
        _ arguments: [String],
        environment: [String: String],
        timeout: Duration = .seconds(30)
    ) async throws -> (termination: Termination, standardOutput: String, standardError: String) {
        let process = try ChildProcess(executable, arguments, environment: environment)
        guard let termination = try await process.wait(timeout: timeout) else {
            process.killAndReap()
            throw TestFailure(
                "\(process.arguments.joined(separator: " ")) still ran after \(timeout); stderr: \(process.standardError.prefix(2000))"
            )
        }
        return (termination, process.standardOutput, process.standardError)
    }
}

/// The `relay` executable and its environment.
enum RelayExecutable {
    /// `RELAY_BIN` if set; else the `relay` built next to this test bundle (same scratch path);
    /// else `<package root>/.build/debug/relay`.
    static var path: String {
        if let path = ProcessInfo.processInfo.environment["RELAY_BIN"] { return path }
        let sibling = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("relay").path
        if FileManager.default.isExecutableFile(atPath: sibling) { return sibling }
        let packageRoot = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()  // Support
            .deletingLastPathComponent()  // RelayTests
            .deletingLastPathComponent()  // Tests
            .deletingLastPathComponent()
        return packageRoot.appendingPathComponent(".build/debug/relay").path
    }

    /// This process's environment without any `RELAY_*` or `REDIS_URL`, plus `extra`.
    static func environment(_ extra: [String: String] = [:]) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("RELAY_") && $0.key != "REDIS_URL" }
        environment.merge(extra) { _, new in new }
        return environment
    }
}

/// A loopback TCP port that nothing listens on (bound, read and released: another process could
/// take it in between, which is unlikely enough for tests).
func unusedPort() throws -> Int {
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
