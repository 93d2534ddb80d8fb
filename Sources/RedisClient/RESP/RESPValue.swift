import NIOCore

/// A RESP2 reply, copied out of the parser into Swift values.
///
/// A RESP2 null bulk string and a null array both arrive as ``null``.
public enum RESPValue: Sendable, Hashable {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    case bulkString(ByteBuffer)
    case null
    case array([RESPValue])
}

extension RESPValue {
    /// The value as text: a simple or bulk string decoded as UTF-8, or an integer's digits.
    public var string: String? {
        switch self {
        case .simpleString(let string): string
        case .bulkString(let buffer): String(buffer: buffer)
        case .integer(let value): String(value)
        case .error, .null, .array: nil
        }
    }

    /// The value as an integer: an integer reply, or a string of decimal digits.
    public var int: Int64? {
        switch self {
        case .integer(let value): value
        case .bulkString(let buffer): Int64(String(buffer: buffer))
        case .simpleString(let string): Int64(string)
        case .error, .null, .array: nil
        }
    }

    /// The raw bytes of a bulk or simple string.
    public var bytes: [UInt8]? {
        switch self {
        case .bulkString(let buffer): Array(buffer.readableBytesView)
        case .simpleString(let string): Array(string.utf8)
        case .integer, .error, .null, .array: nil
        }
    }

    /// The elements of an array reply.
    public var array: [RESPValue]? {
        if case .array(let elements) = self { return elements }
        return nil
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

extension RESPValue: CustomStringConvertible {
    public var description: String {
        switch self {
        case .simpleString(let string): "+\(string)"
        case .error(let message): "-\(message)"
        case .integer(let value): ":\(value)"
        case .bulkString(let buffer): "\"\(String(buffer: buffer))\""
        case .null: "(nil)"
        case .array(let elements): "[\(elements.map(\.description).joined(separator: ", "))]"
        }
    }
}
