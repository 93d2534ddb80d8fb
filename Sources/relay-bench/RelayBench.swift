import ArgumentParser

@main
struct RelayBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay-bench",
        abstract: "Load generator for the relay and its Redis client.",
        subcommands: [RedisClientBenchmark.self]
    )
}
