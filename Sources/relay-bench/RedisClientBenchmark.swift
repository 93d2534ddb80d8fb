import ArgumentParser
import Foundation
import RedisClient

/// The Redis client on the same work as `redis-benchmark`: N requests, C of them in flight.
struct RedisClientBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redis",
        abstract: "Requests per second of the Redis client (SET, GET, EVALSHA), as redis-benchmark measures them."
    )

    @Option(help: "Redis URL.") var url = "redis://127.0.0.1:6379"
    @Option(help: "Requests per test.") var requests = 200_000
    @Option(help: "Requests in flight at once (tasks, each waiting for its reply).") var concurrency = 50
    @Option(help: "Connections in the client's pool.") var connections = 1
    @Option(help: "Tests to run: set, get, evalsha.") var tests = "set,get,evalsha"

    /// The script redis-benchmark is given too (scripts/bench.sh loads the same source).
    static let script = RedisScript("return redis.call('SET', KEYS[1], ARGV[1])")

    func run() async throws {
        var configuration = try RedisConfiguration(url: self.url)
        configuration.poolSize = self.connections
        let client = RedisClient(configuration: configuration)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await client.run() }
            defer { group.cancelAll() }
            try await client.ping()
            let value = String(repeating: "x", count: 3)
            for test in self.tests.split(separator: ",") {
                let perTask = self.requests / self.concurrency
                let work: @Sendable (Int) async throws -> Void
                switch test {
                case "set": work = { _ in try await client.execute("SET", "key:__rand_int__", value) }
                case "get": work = { _ in try await client.execute("GET", "key:__rand_int__") }
                case "evalsha": work = { _ in try await client.run(Self.script, keys: ["key:__rand_int__"], arguments: [value]) }
                default: throw ValidationError("unknown test \(test)")
                }
                let start = ContinuousClock.now
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    for task in 0..<self.concurrency {
                        tasks.addTask {
                            for index in 0..<perTask { try await work(task * perTask + index) }
                        }
                    }
                    try await tasks.waitForAll()
                }
                let elapsed = ContinuousClock.now - start
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                let rate = Double(perTask * self.concurrency) / seconds
                print("\(test.uppercased()): \(String(format: "%.2f", rate)) requests per second")
            }
        }
    }
}
