/// Checks that bytes are exactly one JSON value as RFC 8259 defines it, nested at most
/// `maxDepth` deep. Foundation's decoder is lenient (it takes a trailing comma, for one), and a
/// body it would quietly accept is a client bug the API should name, not hide.
struct StrictJSON {
    static let maxDepth = 64

    private let bytes: [UInt8]
    private var index = 0

    static func isValid(_ bytes: some Collection<UInt8>) -> Bool {
        var parser = StrictJSON(bytes: Array(bytes))
        parser.skipWhitespace()
        guard parser.value(depth: 0) else { return false }
        parser.skipWhitespace()
        return parser.index == parser.bytes.count
    }

    private init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    private var current: UInt8? { self.index < self.bytes.count ? self.bytes[self.index] : nil }

    private mutating func skipWhitespace() {
        while let byte = self.current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { self.index += 1 }
    }

    private mutating func consume(_ byte: UInt8) -> Bool {
        guard self.current == byte else { return false }
        self.index += 1
        return true
    }

    private mutating func value(depth: Int) -> Bool {
        guard depth <= Self.maxDepth, let byte = self.current else { return false }
        switch byte {
        case UInt8(ascii: "{"): return self.object(depth: depth + 1)
        case UInt8(ascii: "["): return self.array(depth: depth + 1)
        case UInt8(ascii: "\""): return self.string()
        case UInt8(ascii: "t"): return self.literal("true")
        case UInt8(ascii: "f"): return self.literal("false")
        case UInt8(ascii: "n"): return self.literal("null")
        default: return self.number()
        }
    }

    private mutating func object(depth: Int) -> Bool {
        self.index += 1
        self.skipWhitespace()
        if self.consume(UInt8(ascii: "}")) { return true }
        while true {
            guard self.current == UInt8(ascii: "\""), self.string() else { return false }
            self.skipWhitespace()
            guard self.consume(UInt8(ascii: ":")) else { return false }
            self.skipWhitespace()
            guard self.value(depth: depth) else { return false }
            self.skipWhitespace()
            if self.consume(UInt8(ascii: "}")) { return true }
            guard self.consume(UInt8(ascii: ",")) else { return false }
            self.skipWhitespace()
        }
    }

    private mutating func array(depth: Int) -> Bool {
        self.index += 1
        self.skipWhitespace()
        if self.consume(UInt8(ascii: "]")) { return true }
        while true {
            guard self.value(depth: depth) else { return false }
            self.skipWhitespace()
            if self.consume(UInt8(ascii: "]")) { return true }
            guard self.consume(UInt8(ascii: ",")) else { return false }
            self.skipWhitespace()
        }
    }

    /// A string; the bytes between the quotes must be valid UTF-8, which the decoder checks.
    private mutating func string() -> Bool {
        self.index += 1
        while let byte = self.current {
            self.index += 1
            switch byte {
            case UInt8(ascii: "\""): return true
            case UInt8(ascii: "\\"):
                guard let escaped = self.current else { return false }
                self.index += 1
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    continue
                case UInt8(ascii: "u"):
                    for _ in 0..<4 {
                        guard let hex = self.current, hex.isHexDigit else { return false }
                        self.index += 1
                    }
                default: return false
                }
            case 0x00..<0x20: return false
            default: continue
            }
        }
        return false
    }

    private mutating func literal(_ word: StaticString) -> Bool {
        let count = word.utf8CodeUnitCount
        guard self.index + count <= self.bytes.count else { return false }
        let matches = word.withUTF8Buffer { expected in self.bytes[self.index..<self.index + count].elementsEqual(expected) }
        self.index += count
        return matches
    }

    private mutating func number() -> Bool {
        _ = self.consume(UInt8(ascii: "-"))
        guard let first = self.current, first.isDigit else { return false }
        self.index += 1
        if first != UInt8(ascii: "0") { self.digits() }
        if self.consume(UInt8(ascii: ".")) {
            guard self.current?.isDigit == true else { return false }
            self.digits()
        }
        if self.consume(UInt8(ascii: "e")) || self.consume(UInt8(ascii: "E")) {
            if !self.consume(UInt8(ascii: "+")) { _ = self.consume(UInt8(ascii: "-")) }
            guard self.current?.isDigit == true else { return false }
            self.digits()
        }
        return true
    }

    private mutating func digits() {
        while self.current?.isDigit == true { self.index += 1 }
    }
}

extension UInt8 {
    fileprivate var isDigit: Bool { self >= UInt8(ascii: "0") && self <= UInt8(ascii: "9") }
    fileprivate var isHexDigit: Bool {
        self.isDigit || (self >= UInt8(ascii: "a") && self <= UInt8(ascii: "f")) || (self >= UInt8(ascii: "A") && self <= UInt8(ascii: "F"))
    }
}
