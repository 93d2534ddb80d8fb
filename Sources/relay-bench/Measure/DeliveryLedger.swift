/// What one socket received of each stream: which numbers (a bitset), in what order.
/// Touched only on the socket's event loop.
final class DeliveryLedger {
    struct Stream {
        var seen: [UInt64] = []
        var last = 0
        var distinct = 0
        var duplicates = 0
        var outOfOrder = 0

        mutating func record(_ number: Int) {
            let word = number >> 6
            if word >= self.seen.count { self.seen.append(contentsOf: repeatElement(0, count: word - self.seen.count + 1)) }
            let bit = UInt64(1) << UInt64(number & 63)
            if self.seen[word] & bit != 0 {
                self.duplicates += 1
                return
            }
            self.seen[word] |= bit
            self.distinct += 1
            if number < self.last { self.outOfOrder += 1 } else { self.last = number }
        }

        /// Numbers in 1...published never received.
        func missing(published: Int) -> Int {
            var have = 0
            for number in 1...max(published, 1) where number >> 6 < self.seen.count {
                if self.seen[number >> 6] & (UInt64(1) << UInt64(number & 63)) != 0 { have += 1 }
            }
            return max(published, 0) - have
        }
    }

    var streams: [Int: Stream] = [:]

    @inline(__always)
    func record(stream: Int, number: Int) {
        self.streams[stream, default: Stream()].record(number)
    }
}
