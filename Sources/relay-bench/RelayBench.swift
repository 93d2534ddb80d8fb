import ArgumentParser

@main
struct RelayBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay-bench",
        abstract: "Load generator for the relay (and for nchan, its peer) and for the relay's Redis client.",
        subcommands: [
            FanoutScenario.self,
            DirectMessagesScenario.self,
            SendScenario.self,
            IdleScenario.self,
            ResumeScenario.self,
            RedisClientBenchmark.self,
        ]
    )
}
