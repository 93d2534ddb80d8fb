/// Parses bytes that must be exactly one JSON value as RFC 8259 defines it, nested at most
/// `maxDepth` deep, with valid UTF-8 in every string and no key given twice in one object.
/// Foundation's decoder is lenient (it takes a trailing comma, and which of two equal keys wins
/// is its own affair), and a body it would quietly accept is a client bug the API should name,
/// not hide.
///
/// The same parser reads request bodies and WebSocket frames, so both refuse the same things.
struct StrictJSON {
    static let maxDepth = 64

    /// A parsed JSON value. Numbers keep their text: the reader decides what range it accepts.
    enum Value: Sendable, Equatable {
        case string(String)
        case number(String)
        case bool(Bool)
        case null
        case array([Value])
        case object([Key: Value])

        subscript(key: String) -> Value? {
            guard case .object(let fields) = self else { return nil }
            return fields[Key(key)]
        }

        var string: String? {
            guard case .string(let text) = self else { return nil }
            return text
        }

        /// The value if it is a whole number that fits an `Int64` (no fraction, no exponent).
        var int64: Int64? {
            guard case .number(let text) = self else { return nil }
            return Int64(text)
        }

        var array: [Value]? {
            guard case .array(let values) = self else { return nil }
            return values
        }
    }

    /// An object's name, the same as another only if their UTF-8 is (RFC 8259 compares names
    /// code unit by code unit). Swift's `String` compares by canonical equivalence, under which
    /// `"\u00e9"` and `"e\u0301"`, or the Kelvin sign and `K`, would be one name given twice.
    struct Key: Hashable, Sendable {
        let text: String

        init(_ text: String) {
            self.text = text
        }

        static func == (lhs: Key, rhs: Key) -> Bool {
            lhs.text.utf8.elementsEqual(rhs.text.utf8)
        }

        func hash(into hasher: inout Hasher) {
            var text = self.text
            text.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        }
    }

    /// The bytes being parsed, valid for the parse only.
    private let bytes: UnsafeBufferPointer<UInt8>
    private var index = 0

    /// Whether `bytes` are one strict JSON value.
    static func isValid(_ bytes: some Collection<UInt8>) -> Bool {
        Self.parse(bytes) != nil
    }

    /// The value `bytes` hold, or `nil` if they are not exactly one strict JSON value. Read
    /// where they lie when they are contiguous (a request body, a frame's payload).
    static func parse(_ bytes: some Collection<UInt8>) -> Value? {
        if let value = bytes.withContiguousStorageIfAvailable(Self.parse) { return value }
        return Array(bytes).withUnsafeBufferPointer(Self.parse)
    }

    private static func parse(_ bytes: UnsafeBufferPointer<UInt8>) -> Value? {
        var parser = StrictJSON(bytes: bytes)
        parser.skipWhitespace()
        guard let value = parser.value(depth: 0) else { return nil }
        parser.skipWhitespace()
        return parser.index == parser.bytes.count ? value : nil
    }

    private init(bytes: UnsafeBufferPointer<UInt8>) {
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

    /// A value inside `depth` containers: one more container only while that makes at most
    /// ``maxDepth``.
    private mutating func value(depth: Int) -> Value? {
        guard let byte = self.current else { return nil }
        switch byte {
        case UInt8(ascii: "{"): return depth < Self.maxDepth ? self.object(depth: depth + 1) : nil
        case UInt8(ascii: "["): return depth < Self.maxDepth ? self.array(depth: depth + 1) : nil
        case UInt8(ascii: "\""): return self.string().map(Value.string)
        case UInt8(ascii: "t"): return self.literal("true") ? .bool(true) : nil
        case UInt8(ascii: "f"): return self.literal("false") ? .bool(false) : nil
        case UInt8(ascii: "n"): return self.literal("null") ? .null : nil
        default: return self.number()
        }
    }

    private mutating func object(depth: Int) -> Value? {
        self.index += 1
        self.skipWhitespace()
        if self.consume(UInt8(ascii: "}")) { return .object([:]) }
        // Room for a frame's or a typical body's fields at once, rather than grown twice.
        var fields = [Key: Value](minimumCapacity: 6)
        while true {
            guard self.current == UInt8(ascii: "\""), let key = self.string() else { return nil }
            self.skipWhitespace()
            guard self.consume(UInt8(ascii: ":")) else { return nil }
            self.skipWhitespace()
            guard let value = self.value(depth: depth) else { return nil }
            // A key given twice: which one counts would be a guess.
            guard fields.updateValue(value, forKey: Key(key)) == nil else { return nil }
            self.skipWhitespace()
            if self.consume(UInt8(ascii: "}")) { return .object(fields) }
            guard self.consume(UInt8(ascii: ",")) else { return nil }
            self.skipWhitespace()
        }
    }

    private mutating func array(depth: Int) -> Value? {
        self.index += 1
        self.skipWhitespace()
        var values: [Value] = []
        if self.consume(UInt8(ascii: "]")) { return .array(values) }
        while true {
            guard let value = self.value(depth: depth) else { return nil }
            values.append(value)
            self.skipWhitespace()
            if self.consume(UInt8(ascii: "]")) { return .array(values) }
            guard self.consume(UInt8(ascii: ",")) else { return nil }
            self.skipWhitespace()
        }
    }

    /// A string, unescaped; `nil` for a bad escape, a control character, invalid UTF-8 (RFC 3629:
    /// no overlong forms, no surrogates, nothing above U+10FFFF) or a lone surrogate escape.
    private mutating func string() -> String? {
        self.index += 1
        // Filled only once an escape is met: a string without one is made from its bytes.
        var out: [UInt8] = []
        var hasEscapes = false
        var start = self.index
        while let byte = self.current {
            switch byte {
            case UInt8(ascii: "\""):
                let end = self.index
                self.index += 1
                guard hasEscapes else { return String(decoding: UnsafeBufferPointer(rebasing: self.bytes[start..<end]), as: UTF8.self) }
                out.append(contentsOf: self.bytes[start..<end])
                return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                hasEscapes = true
                out.append(contentsOf: self.bytes[start..<self.index])
                self.index += 1
                guard let escaped = self.current else { return nil }
                self.index += 1
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escaped)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    guard let scalar = self.escapedScalar() else { return nil }
                    out.append(contentsOf: String(Character(scalar)).utf8)
                default: return nil
                }
                start = self.index
            case 0x00..<0x20: return nil
            case 0x20..<0x80: self.index += 1
            default:
                guard let length = self.utf8SequenceLength(at: self.index) else { return nil }
                self.index += length
            }
        }
        return nil
    }

    /// The scalar of a `\uXXXX` escape (the `\u` already read), joining a surrogate pair.
    private mutating func escapedScalar() -> Unicode.Scalar? {
        guard let high = self.hex4() else { return nil }
        switch high {
        case 0xD800..<0xDC00:
            guard self.consume(UInt8(ascii: "\\")), self.consume(UInt8(ascii: "u")), let low = self.hex4(),
                (0xDC00..<0xE000).contains(low)
            else { return nil }
            return Unicode.Scalar(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
        case 0xDC00..<0xE000: return nil
        default: return Unicode.Scalar(high)
        }
    }

    private mutating func hex4() -> UInt32? {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let byte = self.current else { return nil }
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: return nil
            }
            value = value << 4 | digit
            self.index += 1
        }
        return value
    }

    /// The length of the well-formed UTF-8 sequence starting at `start` (its lead byte ≥ 0x80),
    /// or `nil` if it is not one (Unicode's table 3-7).
    private func utf8SequenceLength(at start: Int) -> Int? {
        let lead = self.bytes[start]
        let length: Int
        var low: UInt8 = 0x80
        var high: UInt8 = 0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0: (length, low) = (3, 0xA0)
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: (length, high) = (3, 0x9F)
        case 0xF0: (length, low) = (4, 0x90)
        case 0xF1...0xF3: length = 4
        case 0xF4: (length, high) = (4, 0x8F)
        default: return nil
        }
        guard start + length <= self.bytes.count else { return nil }
        let second = self.bytes[start + 1]
        guard second >= low && second <= high else { return nil }
        for offset in 2..<length where self.bytes[start + offset] & 0xC0 != 0x80 { return nil }
        return length
    }

    private mutating func literal(_ word: StaticString) -> Bool {
        let count = word.utf8CodeUnitCount
        guard self.index + count <= self.bytes.count else { return false }
        let matches = word.withUTF8Buffer { expected in self.bytes[self.index..<self.index + count].elementsEqual(expected) }
        self.index += count
        return matches
    }

    private mutating func number() -> Value? {
        let start = self.index
        _ = self.consume(UInt8(ascii: "-"))
        guard let first = self.current, first.isDigit else { return nil }
        self.index += 1
        if first != UInt8(ascii: "0") { self.digits() }
        if self.consume(UInt8(ascii: ".")) {
            guard self.current?.isDigit == true else { return nil }
            self.digits()
        }
        if self.consume(UInt8(ascii: "e")) || self.consume(UInt8(ascii: "E")) {
            if !self.consume(UInt8(ascii: "+")) { _ = self.consume(UInt8(ascii: "-")) }
            guard self.current?.isDigit == true else { return nil }
            self.digits()
        }
        return .number(String(decoding: self.bytes[start..<self.index], as: UTF8.self))
    }

    private mutating func digits() {
        while self.current?.isDigit == true { self.index += 1 }
    }
}

extension UInt8 {
    fileprivate var isDigit: Bool { self >= UInt8(ascii: "0") && self <= UInt8(ascii: "9") }
}
