/// The processes whose CPU a scenario charges to the server: the server's own (the relay, or
/// nginx's workers) and Redis's.
struct ServerProcesses: Sendable {
    var server: [Int32]
    var redis: [Int32]

    struct Sample: Sendable {
        var server: Double
        var redis: Double
        var loadGenerator: Double
        var wall: UInt64

        /// CPU seconds spent between `earlier` and this sample, and the wall time elapsed.
        func since(_ earlier: Sample) -> Usage {
            Usage(
                server: self.server - earlier.server,
                redis: self.redis - earlier.redis,
                loadGenerator: self.loadGenerator - earlier.loadGenerator,
                seconds: Double(self.wall - earlier.wall) / 1e9
            )
        }
    }

    /// CPU seconds over an interval.
    struct Usage: Sendable {
        var server: Double
        var redis: Double
        var loadGenerator: Double
        var seconds: Double
        var serverAndRedis: Double { self.server + self.redis }
    }

    func sample() -> Sample {
        Sample(
            server: ProcessStats.cpuSeconds(pids: self.server),
            redis: ProcessStats.cpuSeconds(pids: self.redis),
            loadGenerator: ProcessStats.ownCPUSeconds(),
            wall: ProcessStats.now()
        )
    }

    var serverResidentBytes: Int { ProcessStats.residentBytes(pids: self.server) }
}
