import Synchronization

/// Counts shared by all the sockets of a scenario, read by the task that drives it.
final class ScenarioCounters: Sendable {
    let hellos = Atomic<Int>(0)
    let deliveries = Atomic<Int>(0)
    let acks = Atomic<Int>(0)
    let errors = Atomic<Int>(0)
    let closed = Atomic<Int>(0)
    let resumed = Atomic<Int>(0)
    /// Publishing is over: ack-paced publishers stop refilling their window.
    let stopped = Atomic<Bool>(false)
    /// The scenario is closing its sockets: closes are no longer counted.
    let closing = Atomic<Bool>(false)
    /// Close codes other than a normal end, for the report.
    let closeCodes = Mutex<[UInt16: Int]>([:])
}
