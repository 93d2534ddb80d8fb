/// A Redis Cluster hash slot, 0 to 16,383: where a key lives in a cluster.
///
/// A key's slot is the CRC16 (XMODEM) of the key modulo 16,384, or of its hash tag: the text
/// between the first `{` and the first `}` after it, when that text is not empty. Keys that share
/// a tag (`{c1}:log`, `{c1}:seq`) share a slot, which is what lets one script touch them all.
public struct HashSlot: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The number of slots in a cluster.
    public static let count = 16_384

    public let rawValue: UInt16

    /// A slot by number; nil outside 0...16383.
    public init?(rawValue: Int) {
        guard (0..<Self.count).contains(rawValue) else { return nil }
        self.rawValue = UInt16(rawValue)
    }

    /// The slot of a key.
    public init(key: String) {
        self.init(key: Array(key.utf8))
    }

    /// The slot of a key given as bytes.
    public init(key: [UInt8]) {
        let tag = Self.hashTag(of: key)
        self.rawValue = Self.crc16(key[tag]) % UInt16(Self.count)
    }

    /// The part of `key` that is hashed: the first non-empty `{…}`, else the whole key.
    static func hashTag(of key: [UInt8]) -> Range<Int> {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")),
            let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")),
            close > open + 1
        else { return key.indices }
        return (open + 1)..<close
    }

    /// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as the cluster specification defines.
    static func crc16(_ bytes: some Sequence<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc = (crc << 8) ^ Self.crcTable[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ byte)]
        }
        return crc
    }

    private static let crcTable: [UInt16] = (0..<256).map { index in
        var crc = UInt16(index) << 8
        for _ in 0..<8 {
            crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
        }
        return crc
    }

    public static func < (lhs: HashSlot, rhs: HashSlot) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "\(self.rawValue)" }
}
