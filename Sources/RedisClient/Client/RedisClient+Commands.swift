import NIOCore

/// Typed helpers for the commands the relay uses; anything else goes through ``RedisClient/execute(_:)``.
extension RedisClient {
    public func ping() async throws {
        _ = try await self.execute(RedisCommand("PING"))
    }

    public func get(_ key: String) async throws -> ByteBuffer? {
        switch try await self.execute(RedisCommand("GET", key: key, [key])) {
        case .bulkString(let buffer): buffer
        default: nil
        }
    }

    public func set(_ key: String, to value: some RedisArgument, expiresIn: Duration? = nil) async throws {
        var command = RedisCommand("SET", key: key, [key])
        command.append(value)
        if let expiresIn {
            command.append("PX")
            command.append(Int64(expiresIn.components.seconds * 1000 + expiresIn.components.attoseconds / 1_000_000_000_000_000))
        }
        _ = try await self.execute(command)
    }

    @discardableResult
    public func delete(_ keys: [String]) async throws -> Int64 {
        try await self.execute(RedisCommand("DEL", key: keys.first, keys)).int ?? 0
    }

    public func increment(_ key: String) async throws -> Int64 {
        try await self.integer(RedisCommand("INCR", key: key, [key]))
    }

    public func exists(_ key: String) async throws -> Bool {
        try await self.integer(RedisCommand("EXISTS", key: key, [key])) > 0
    }

    public func hashGetAll(_ key: String) async throws -> [String: String] {
        let elements = try await self.execute(RedisCommand("HGETALL", key: key, [key])).array ?? []
        var result = [String: String](minimumCapacity: elements.count / 2)
        var index = 0
        while index + 1 < elements.count {
            if let field = elements[index].string, let value = elements[index + 1].string { result[field] = value }
            index += 2
        }
        return result
    }

    public func setMembers(_ key: String) async throws -> [String] {
        try await self.execute(RedisCommand("SMEMBERS", key: key, [key])).array?.compactMap(\.string) ?? []
    }

    public func setAdd(_ key: String, _ members: [String]) async throws -> Int64 {
        try await self.integer(RedisCommand("SADD", key: key, [key] + members))
    }

    public func setRemove(_ key: String, _ members: [String]) async throws -> Int64 {
        try await self.integer(RedisCommand("SREM", key: key, [key] + members))
    }

    public func isMember(_ key: String, _ member: String) async throws -> Bool {
        try await self.integer(RedisCommand("SISMEMBER", key: key, [key, member])) == 1
    }

    /// Publishes to a shard channel; returns how many subscribers (of that shard) received it.
    @discardableResult
    public func shardPublish(_ topic: String, _ message: some RedisArgument) async throws -> Int64 {
        var command = RedisCommand("SPUBLISH", key: topic, [topic])
        command.append(message)
        return try await self.integer(command)
    }

    /// `XRANGE key start end [COUNT n]`: entries in ascending id order.
    public func streamRange(_ key: String, from start: String, to end: String, count: Int? = nil) async throws -> [RedisStreamEntry] {
        var command = RedisCommand("XRANGE", key: key, [key, start, end])
        if let count {
            command.append("COUNT")
            command.append(count)
        }
        return try RedisStreamEntry.entries(from: await self.execute(command))
    }

    /// `XREVRANGE key end start [COUNT n]`: entries in descending id order.
    public func streamReverseRange(_ key: String, from end: String, to start: String, count: Int? = nil) async throws -> [RedisStreamEntry]
    {
        var command = RedisCommand("XREVRANGE", key: key, [key, end, start])
        if let count {
            command.append("COUNT")
            command.append(count)
        }
        return try RedisStreamEntry.entries(from: await self.execute(command))
    }

    private func integer(_ command: RedisCommand) async throws -> Int64 {
        let reply = try await self.execute(command)
        guard case .integer(let value) = reply else {
            throw RedisError(.protocolViolation, "\(command.name) answered \(reply), not an integer")
        }
        return value
    }
}

/// One entry of a Redis Stream: its id and its field-value pairs.
public struct RedisStreamEntry: Sendable, Hashable {
    public var id: String
    public var fields: [(String, ByteBuffer)] {
        get { zip(self.names, self.values).map { ($0, $1) } }
    }
    private var names: [String]
    private var values: [ByteBuffer]

    public init(id: String, fields: [(String, ByteBuffer)]) {
        self.id = id
        self.names = fields.map(\.0)
        self.values = fields.map(\.1)
    }

    /// The value of a field, if the entry has it.
    public subscript(field: String) -> ByteBuffer? {
        self.names.firstIndex(of: field).map { self.values[$0] }
    }

    static func entries(from reply: RESPValue) throws -> [RedisStreamEntry] {
        guard case .array(let rows) = reply else {
            throw RedisError(.protocolViolation, "stream range answered \(reply)")
        }
        return try rows.map { row in
            guard case .array(let pair) = row, pair.count == 2, let id = pair[0].string, case .array(let flat) = pair[1] else {
                throw RedisError(.protocolViolation, "malformed stream entry \(row)")
            }
            var fields = [(String, ByteBuffer)]()
            var index = 0
            while index + 1 < flat.count {
                if let name = flat[index].string, case .bulkString(let value) = flat[index + 1] { fields.append((name, value)) }
                index += 2
            }
            return RedisStreamEntry(id: id, fields: fields)
        }
    }
}
