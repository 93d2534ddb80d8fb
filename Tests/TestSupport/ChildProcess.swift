import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A child process started with `posix_spawn` (Foundation's `Process` can wait forever in
/// `waitUntilExit` on Linux), with an empty signal mask and default signal handlers, stdin from
/// `/dev/null` and stdout and stderr into temporary files. Waits are bounded polls of `waitpid`.
public final class ChildProcess: @unchecked Sendable {
    public enum Termination: Equatable, Sendable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        public var description: String {
            switch self {
            case .exited(let code): "exit status \(code)"
            case .signaled(let signal): "signal \(signal)"
            }
        }
    }

    public let pid: pid_t
    public let arguments: [String]
    private let outputPath: String
    private let errorPath: String
    private let lock = NSLock()
    private var termination: Termination?

    /// Starts `executable` with `arguments` and exactly `environment`.
    public init(_ executable: String, _ arguments: [String], environment: [String: String]) throws {
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
        // Nothing else of the test process: a socket it has open (a relay's WebSocket under test:
        // NIO accepts without close-on-exec) would stay open in the child, and its peer would never
        // see it closed.
        Self.closeInheritedDescriptors(&actions)
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

    /// `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34), which Swift's Glibc module does
    /// not show.
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32
    private static let addCloseFrom: AddCloseFrom? = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np").map {
        unsafeBitCast($0, to: AddCloseFrom.self)
    }

    /// Closes every descriptor above stderr in the child; without `addclosefrom`, those open now.
    private static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
        if let addCloseFrom, addCloseFrom(&actions, 3) == 0 { return }
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd"))?.compactMap { Int32($0) } ?? []
        for descriptor in open where descriptor > 2 {
            posix_spawn_file_actions_addclose(&actions, descriptor)
        }
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
    public var standardOutput: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    /// What the process wrote to stderr so far.
    public var standardError: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }

    /// How it ended, `nil` while it runs (reaps it if it has ended).
    public var exitStatus: Termination? {
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
    public func wait(timeout: Duration) async throws -> Termination? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let exitStatus { return exitStatus }
            guard ContinuousClock.now < deadline else { return nil }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Sends `signal` unless the process has ended.
    public func send(_ signal: Int32) {
        if exitStatus == nil { Glibc.kill(pid, signal) }
    }

    /// Kills the process (SIGKILL) and reaps it.
    public func killAndReap() {
        self.stop(SIGKILL)
    }

    /// Sends `signal` and waits, blocking the calling thread, until the process has ended.
    /// Call it off the Swift concurrency pool, or only with a signal that ends the process at once.
    public func stop(_ signal: Int32) {
        lock.withLock {
            guard termination == nil else { return }
            Glibc.kill(pid, signal)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            let number = status & 0x7f
            termination = number == 0 ? .exited((status >> 8) & 0xff) : .signaled(number)
        }
    }

    /// Runs `executable` to its end, killing it if it runs longer than `timeout`.
    /// - Throws: `TestFailure` if it had to be killed.
    public static func run(
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
