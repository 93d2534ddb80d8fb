import Foundation
import TestSupport

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
