/// Where Redis is and how the client talks to it. Every field has a default.
public struct RedisConfiguration: Sendable {
    public var host: String = "127.0.0.1"
    public var port: Int = 6379
    public var username: String?
    public var password: String?
    public var database: Int = 0
    /// Multiplexed connections in the client's pool, spread over the event loops of its group.
    /// A caller on an event loop with a connection of its own sends there
    /// (`RedisClient/runUnwaitedImmediately`); with fewer connections than loops, some calls hop.
    public var poolSize: Int = 2
    /// How long a command may wait for its reply (and for a connection, when none is up yet).
    public var commandTimeout: Duration = .seconds(5)
    public var connectTimeout: Duration = .seconds(3)
    /// Reconnect delays grow from `minimumBackoff` to `maximumBackoff`, with jitter.
    public var minimumBackoff: Duration = .milliseconds(50)
    public var maximumBackoff: Duration = .seconds(2)
    /// A subscriber pings Redis this often to find a dead connection.
    public var healthCheckInterval: Duration = .seconds(5)
    /// Where to look for Redis: the first is `host`/`port`; the others are more nodes of the
    /// same cluster. A client asks the first that answers whether it is a cluster node
    /// (`cluster_enabled:1`); if so it discovers every shard itself.
    public var seeds: [RedisEndpoint] = []
    /// Replicas that must hold a script's writes before ``RedisClient/run(_:keys:arguments:)``
    /// returns (`WAIT` on the same connection); 0 waits for none.
    public var replicaWait: Int = 0
    /// How long `WAIT` may take; fewer replicas by then fail the call with `.unavailable`.
    public var replicaWaitTimeout: Duration = .seconds(1)
    /// In cluster mode, how often the topology is read again when nothing forces it sooner.
    public var topologyRefreshInterval: Duration = .seconds(5)
    /// In cluster mode, how many times a command is retried after `TRYAGAIN`, `CLUSTERDOWN`,
    /// `LOADING` or an unreachable node before it fails with `.unavailable`.
    public var clusterRetries: Int = 12

    public init() {}

    /// The endpoints to try, the configured host first.
    var candidates: [RedisEndpoint] {
        var result = [RedisEndpoint(host: self.host, port: self.port)]
        for seed in self.seeds where !result.contains(seed) { result.append(seed) }
        return result
    }

    /// The same settings, for the node at `endpoint`.
    func node(_ endpoint: RedisEndpoint) -> RedisConfiguration {
        var configuration = self
        configuration.host = endpoint.host
        configuration.port = endpoint.port
        configuration.seeds = []
        return configuration
    }

    /// Parses one URL, `redis://[[username]:password@]host[:port][/db]`, or a comma-separated
    /// list of them: the seeds of one deployment. The first URL gives the credentials and the
    /// database; every URL's host and port is a seed.
    ///
    /// - Throws: ``RedisError/Code/invalidConfiguration`` naming what is wrong.
    public init(url: String) throws(RedisError) {
        let urls = url.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingSpaces }
        guard let first = urls.first, !first.isEmpty else {
            throw RedisError(.invalidConfiguration, "no Redis URL given")
        }
        try self.init(singleURL: first)
        for other in urls {
            guard !other.isEmpty else { throw RedisError(.invalidConfiguration, "empty URL in the Redis URL list: \(url)") }
            let seed = try RedisConfiguration(singleURL: other)
            let endpoint = RedisEndpoint(host: seed.host, port: seed.port)
            if !self.seeds.contains(endpoint) { self.seeds.append(endpoint) }
        }
    }

    private init(singleURL url: String) throws(RedisError) {
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

/// A Redis server's address.
public struct RedisEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { "\(self.host):\(self.port)" }
}

extension Substring {
    fileprivate var trimmingSpaces: String {
        String(self.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
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
