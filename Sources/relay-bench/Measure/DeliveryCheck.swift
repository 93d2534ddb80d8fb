/// Correctness counts over all sockets.
struct DeliveryCheck: Sendable {
    var missing = 0
    var duplicates = 0
    var outOfOrder = 0
    var closedSockets = 0

    var isClean: Bool { self.missing == 0 && self.duplicates == 0 && self.outOfOrder == 0 && self.closedSockets == 0 }
}
