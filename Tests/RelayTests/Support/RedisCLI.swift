import Foundation
import TestSupport

/// Runs `redis-cli` against the suite's Redis (or `port`) with `arguments`, and returns its
/// output lines; for tests that look at the keys the relay wrote.
func redisCLI(_ arguments: [String], port: Int = TestRedis.port) async throws -> [String] {
    let serverBinary = ProcessInfo.processInfo.environment["REDIS_SERVER_BIN"] ?? "/usr/bin/redis-server"
    let cli = URL(fileURLWithPath: serverBinary).deletingLastPathComponent().appendingPathComponent("redis-cli").path
    let result = try await ChildProcess.run(
        cli,
        ["-h", TestRedis.host, "-p", "\(port)"] + arguments,
        environment: ProcessInfo.processInfo.environment
    )
    guard result.termination == .exited(0) else { throw TestFailure("redis-cli \(arguments): \(result)") }
    return result.standardOutput.split(separator: "\n").map(String.init)
}
