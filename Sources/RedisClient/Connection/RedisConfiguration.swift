/// Where Redis is and how the client talks to it. Every field has a default.
public struct RedisConfiguration: Sendable {
    public var host: String = "127.0.0.1"
    public var port: Int = 6379
    public var username: String?
    public var password: String?
    public var database: Int = 0
    /// Multiplexed connections in the client's pool.
    public var poolSize: Int = 2
    /// How long a command may wait for its reply (and for a connection, when none is up yet).
    public var commandTimeout: Duration = .seconds(5)
    public var connectTimeout: Duration = .seconds(3)
    /// Reconnect delays grow from `minimumBackoff` to `maximumBackoff`, with jitter.
    public var minimumBackoff: Duration = .milliseconds(50)
    public var maximumBackoff: Duration = .seconds(2)
    /// A subscriber pings Redis this often to find a dead connection.
    public var healthCheckInterval: Duration = .seconds(5)

    public init() {}

    /// Parses `redis://[[username]:password@]host[:port][/db]`.
    ///
    /// - Throws: ``RedisError/Code/invalidConfiguration`` naming what is wrong.
    public init(url: String) throws(RedisError) {
        self.init()
        guard url.hasPrefix("redis://") else {
            throw RedisError(.invalidConfiguration, "Redis URL must start with redis://: \(url)")
        }
        var rest = Substring(url.dropFirst("redis://".count))
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !path.isEmpty {
                guard let database = Int(path), database >= 0 else {
                    throw RedisError(.invalidConfiguration, "bad database number in Redis URL: \(path)")
                }
                self.database = database
            }
        }
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                let username = userInfo[..<colon]
                self.username = username.isEmpty ? nil : String(username)
                self.password = String(userInfo[userInfo.index(after: colon)...]).removingPercentEncodingIfValid
            } else if !userInfo.isEmpty {
                self.password = String(userInfo).removingPercentEncodingIfValid
            }
        }
        var hostPart = rest
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            hostPart = rest[..<colon]
            let portText = rest[rest.index(after: colon)...]
            guard let port = Int(portText), (1...65535).contains(port) else {
                throw RedisError(.invalidConfiguration, "bad port in Redis URL: \(portText)")
            }
            self.port = port
        }
        if hostPart.hasPrefix("[") && hostPart.hasSuffix("]") {
            hostPart = hostPart.dropFirst().dropLast()
        }
        guard !hostPart.isEmpty else {
            throw RedisError(.invalidConfiguration, "no host in Redis URL: \(url)")
        }
        self.host = String(hostPart)
    }
}

extension String {
    /// Decodes `%XX` escapes (a password may need them in a URL); leaves the text as is if any is malformed.
    fileprivate var removingPercentEncodingIfValid: String {
        guard self.contains("%") else { return self }
        var bytes = [UInt8]()
        var iterator = self.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next(), let low = iterator.next(),
                let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            else { return self }
            bytes.append(value)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
