import Foundation
import NIOCore
import NIOPosix
import RedisClient

/// A scenario's result: a block of aligned lines for people, and optionally one JSON line
/// (`json {...}`) for scripts/bench.sh.
struct Report {
    let scenario: String
    let target: TargetKind
    private var lines: [(String, String)] = []
    private var values: [(String, String)] = []

    init(scenario: String, target: TargetKind) {
        self.scenario = scenario
        self.target = target
    }

    /// A figure: shown as `label: value unit`, and as `key: value` in the JSON line.
    mutating func add(_ key: String, _ label: String, _ value: Double, decimals: Int = 0, unit: String = "") {
        let text = value.isFinite ? String(format: "%.\(decimals)f", value) : "-"
        self.lines.append((label, unit.isEmpty ? text : "\(text) \(unit)"))
        self.values.append((key, value.isFinite ? String(format: "%.\(max(decimals, 1))f", value) : "null"))
    }

    mutating func add(_ key: String, _ label: String, text: String) {
        self.lines.append((label, text))
        self.values.append((key, "\"\(text)\""))
    }

    /// The usual CPU lines: server, Redis and load generator seconds, and per `unitName`.
    mutating func addCPU(_ usage: ServerProcesses.Usage, per units: Int, unitName: String, measured: Bool) {
        self.add("seconds", "measured over", usage.seconds, decimals: 2, unit: "s")
        if measured {
            self.add("server_cpu_s", "server CPU", usage.server, decimals: 2, unit: "s")
            self.add("redis_cpu_s", "Redis CPU", usage.redis, decimals: 2, unit: "s")
            let per = units > 0 ? 1e6 / Double(units) : .nan
            self.add("server_us_per_\(unitName)", "server CPU per \(unitName)", usage.server * per, decimals: 2, unit: "µs")
            self.add("redis_us_per_\(unitName)", "Redis CPU per \(unitName)", usage.redis * per, decimals: 2, unit: "µs")
            self.add(
                "server_redis_us_per_\(unitName)",
                "server + Redis CPU per \(unitName)",
                usage.serverAndRedis * per,
                decimals: 2,
                unit: "µs"
            )
        }
        self.add("loadgen_cpu_s", "load generator CPU", usage.loadGenerator, decimals: 2, unit: "s")
        let per = units > 0 ? 1e6 / Double(units) : .nan
        self.add("loadgen_us_per_\(unitName)", "load generator CPU per \(unitName)", usage.loadGenerator * per, decimals: 2, unit: "µs")
    }

    mutating func addLatency(_ prefix: String, _ label: String, _ latency: LatencySummary, withP90: Bool = false) {
        self.add("\(prefix)_p50_ms", "\(label) p50", latency.p50, decimals: 2, unit: "ms")
        if withP90 { self.add("\(prefix)_p90_ms", "\(label) p90", latency.p90, decimals: 2, unit: "ms") }
        self.add("\(prefix)_p99_ms", "\(label) p99", latency.p99, decimals: 2, unit: "ms")
        self.add("\(prefix)_max_ms", "\(label) max", latency.max, decimals: 2, unit: "ms")
    }

    mutating func addCheck(_ check: DeliveryCheck) {
        self.add("missing", "missing", Double(check.missing))
        self.add("duplicates", "duplicate", Double(check.duplicates))
        self.add("out_of_order", "out of order", Double(check.outOfOrder))
        self.add("closed", "sockets closed by the server", Double(check.closedSockets))
    }

    func print(json: Bool) {
        let width = (self.lines.map(\.0.count).max() ?? 0) + 2
        Swift.print("== \(self.scenario) (\(self.target.rawValue))")
        for (label, value) in self.lines {
            Swift.print("  " + (label + ":").padding(toLength: width, withPad: " ", startingAt: 0) + value)
        }
        if json {
            let fields = [("scenario", "\"\(self.scenario)\""), ("target", "\"\(self.target.rawValue)\"")] + self.values
            Swift.print("json {" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}")
        }
    }
}
