import Histogram

/// Latency percentiles in milliseconds, from one or more loop meters.
struct LatencySummary: Sendable {
    var count: UInt64 = 0
    var p50 = 0.0
    var p90 = 0.0
    var p99 = 0.0
    var max = 0.0

    init(_ histograms: [Histogram<UInt64>]) {
        guard var merged = histograms.first else { return }
        for other in histograms.dropFirst() { merged.add(other) }
        self.count = merged.totalCount
        guard merged.totalCount > 0 else { return }
        self.p50 = Double(merged.valueAtPercentile(50)) / 1000
        self.p90 = Double(merged.valueAtPercentile(90)) / 1000
        self.p99 = Double(merged.valueAtPercentile(99)) / 1000
        self.max = Double(merged.max) / 1000
    }
}
