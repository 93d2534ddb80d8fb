import NIOCore

/// Who serves which slots: each shard's primary and replicas, and the slot-to-shard map.
///
/// Read from `CLUSTER SHARDS` (Redis 7), or `CLUSTER SLOTS` on older servers. A slot no shard
/// claims (during a failover, say) has no owner: commands for it are retried later.
struct RedisClusterTopology: Sendable, Equatable {
    struct Shard: Sendable, Equatable {
        var primary: RedisEndpoint
        var replicas: [RedisEndpoint]
    }

    private(set) var shards: [Shard] = []
    /// Slot number → index in `shards`; -1 when no shard owns it.
    private var owners: [Int16] = Array(repeating: -1, count: HashSlot.count)

    init() {}

    /// The primary that owns `slot`, if any.
    func primary(for slot: HashSlot) -> RedisEndpoint? {
        let index = Int(self.owners[Int(slot.rawValue)])
        return index < 0 ? nil : self.shards[index].primary
    }

    /// Every primary, in shard order.
    var primaries: [RedisEndpoint] { self.shards.map(\.primary) }

    /// Every node, primaries first.
    var nodes: [RedisEndpoint] { self.primaries + self.shards.flatMap(\.replicas) }

    /// Whether every slot has an owner.
    var coversAllSlots: Bool { !self.owners.contains(-1) }

    /// Adds a shard owning `ranges`, or gives the ranges to the shard of that primary if it exists.
    mutating func assign(_ ranges: [ClosedRange<Int>], primary: RedisEndpoint, replicas: [RedisEndpoint]) {
        let index: Int
        if let existing = self.shards.firstIndex(where: { $0.primary == primary }) {
            index = existing
            self.shards[index].replicas = Array(Set(self.shards[index].replicas + replicas)).sorted { $0.description < $1.description }
        } else {
            index = self.shards.count
            self.shards.append(Shard(primary: primary, replicas: replicas))
        }
        for range in ranges where range.lowerBound >= 0 && range.upperBound < HashSlot.count {
            for slot in range { self.owners[slot] = Int16(index) }
        }
    }

    /// Records what a `MOVED` said: `slot` is served by `primary` now.
    mutating func move(_ slot: HashSlot, to primary: RedisEndpoint) {
        self.assign([Int(slot.rawValue)...Int(slot.rawValue)], primary: primary, replicas: [])
    }

    // MARK: Parsing

    /// Parses a `CLUSTER SHARDS` reply: per shard a map with `slots` (flat start/end pairs) and
    /// `nodes` (maps with `ip`, `endpoint`, `port`, `role`, `health`).
    ///
    /// - Parameter defaultHost: the host to use for a node that does not know its address.
    init(shardsReply reply: RESPValue, defaultHost: String) throws(RedisError) {
        self.init()
        guard let shards = reply.array else { throw RedisError(.protocolViolation, "CLUSTER SHARDS answered \(reply)") }
        var parsed = [(ranges: [ClosedRange<Int>], primary: RedisEndpoint, replicas: [RedisEndpoint])]()
        for shard in shards {
            let fields = Self.map(shard)
            let bounds = fields["slots"]?.array?.compactMap(\.int).map(Int.init) ?? []
            var ranges = [ClosedRange<Int>]()
            var index = 0
            while index + 1 < bounds.count {
                if bounds[index] <= bounds[index + 1] { ranges.append(bounds[index]...bounds[index + 1]) }
                index += 2
            }
            var primary: RedisEndpoint?
            var replicas = [RedisEndpoint]()
            for node in fields["nodes"]?.array ?? [] {
                let node = Self.map(node)
                guard let port = node["port"]?.int ?? node["tls-port"]?.int else { continue }
                let named = [node["ip"]?.string, node["endpoint"]?.string].compactMap { $0 }.first { !$0.isEmpty && $0 != "?" }
                let endpoint = RedisEndpoint(host: named ?? defaultHost, port: Int(port))
                let healthy = node["health"]?.string.map { $0 == "online" } ?? true
                if node["role"]?.string == "master" {
                    // A failed primary stays listed until its replica takes over: it still owns the
                    // slots, and commands for them wait for the promotion.
                    if primary == nil || healthy { primary = endpoint }
                } else if healthy {
                    replicas.append(endpoint)
                }
            }
            guard let primary, !ranges.isEmpty else { continue }
            parsed.append((ranges, primary, replicas))
        }
        // In one order whichever node answers, so that an unchanged topology compares equal.
        for shard in parsed.sorted(by: { $0.primary.description < $1.primary.description }) {
            self.assign(shard.ranges, primary: shard.primary, replicas: shard.replicas.sorted { $0.description < $1.description })
        }
    }

    /// Parses a `CLUSTER SLOTS` reply: `[start, end, [host, port, id], replica…]` per range.
    init(slotsReply reply: RESPValue, defaultHost: String) throws(RedisError) {
        self.init()
        guard let ranges = reply.array else { throw RedisError(.protocolViolation, "CLUSTER SLOTS answered \(reply)") }
        for range in ranges {
            guard let parts = range.array, parts.count >= 3, let start = parts[0].int, let end = parts[1].int, start <= end else {
                continue
            }
            let nodes = parts[2...].compactMap { node -> RedisEndpoint? in
                guard let fields = node.array, fields.count >= 2, let port = fields[1].int else { return nil }
                let host = fields[0].string.flatMap { $0.isEmpty || $0 == "?" ? nil : $0 } ?? defaultHost
                return RedisEndpoint(host: host, port: Int(port))
            }
            guard let primary = nodes.first else { continue }
            self.assign([Int(start)...Int(end)], primary: primary, replicas: nodes.dropFirst().sorted { $0.description < $1.description })
        }
    }

    /// A RESP2 map (a flat array of names and values) as a dictionary.
    private static func map(_ value: RESPValue) -> [String: RESPValue] {
        guard let elements = value.array else { return [:] }
        var result = [String: RESPValue]()
        var index = 0
        while index + 1 < elements.count {
            if let name = elements[index].string { result[name] = elements[index + 1] }
            index += 2
        }
        return result
    }
}

extension RedisClusterTopology {
    /// What a seed says about the deployment.
    enum Discovery: Sendable {
        /// Not a cluster node; with `keepingStandalone`, the connection that asked, still open.
        case standalone(RedisConnection?)
        case cluster(RedisClusterTopology)
    }

    /// Asks each candidate in turn, on a connection of its own, whether it is a cluster node and
    /// if so for the topology; the first that answers decides.
    ///
    /// - Parameter keepingStandalone: hand back the connection that found a standalone server,
    ///   so that a client uses it rather than connecting again.
    /// - Throws: ``RedisError/Code/unavailable`` if none answers.
    static func discover(
        _ candidates: [RedisEndpoint],
        configuration: RedisConfiguration,
        eventLoop: any EventLoop,
        knownCluster: Bool = false,
        keepingStandalone: Bool = false
    ) async throws -> Discovery {
        var lastError = RedisError(.unavailable, "no Redis node to ask")
        for candidate in candidates {
            do {
                let connection = try await RedisConnection.connect(configuration: configuration.node(candidate), eventLoop: eventLoop)
                var kept = false
                defer { if !kept { connection.close() } }
                if !knownCluster {
                    let info = try await connection.execute(RedisCommand("INFO", ["cluster"]))
                    guard info.string?.contains("cluster_enabled:1") == true else {
                        kept = keepingStandalone
                        return .standalone(kept ? connection : nil)
                    }
                }
                let topology: RedisClusterTopology
                do {
                    topology = try RedisClusterTopology(
                        shardsReply: try await connection.execute(RedisCommand("CLUSTER", ["SHARDS"])),
                        defaultHost: candidate.host
                    )
                } catch let error as RedisError where error.code == .serverError {
                    // Before Redis 7: no CLUSTER SHARDS.
                    topology = try RedisClusterTopology(
                        slotsReply: try await connection.execute(RedisCommand("CLUSTER", ["SLOTS"])),
                        defaultHost: candidate.host
                    )
                }
                guard !topology.shards.isEmpty else {
                    lastError = RedisError(.unavailable, "cluster node \(candidate) knows no shard yet")
                    continue
                }
                return .cluster(topology)
            } catch let error as RedisError where error.code == .serverError && !knownCluster {
                // INFO refused (a restricted user, say): not something a cluster client can work with.
                _ = error
                return .standalone(nil)
            } catch let error as RedisError {
                lastError = error
            } catch {
                lastError = RedisError(.unavailable, "\(error)")
            }
        }
        throw RedisError(.unavailable, lastError.message)
    }
}
