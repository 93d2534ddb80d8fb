/// What a cluster node's error reply asks of the client: go elsewhere, or try again later.
enum RedisClusterRedirection: Hashable, Sendable {
    /// `MOVED slot host:port`: the slot lives at that node now; the topology is stale.
    case moved(HashSlot, RedisEndpoint)
    /// `ASK slot host:port`: this one key is being migrated; send `ASKING` then the command there.
    case ask(HashSlot, RedisEndpoint)
    /// `TRYAGAIN`, `CLUSTERDOWN`, `LOADING` or `MASTERDOWN`: nothing ran; the same command may
    /// succeed after a pause and a fresh topology. (So may one for a node that cannot be reached,
    /// which the client finds out before it sends anything.)
    case retryLater

    /// How the client should treat the error reply in `error`; nil if the error is the command's own.
    init?(_ error: RedisError) {
        guard let code = error.replyCode else { return nil }
        switch code {
        case "MOVED", "ASK":
            let parts = error.replyDetail.split(separator: " ")
            guard parts.count == 2, let number = Int(parts[0]), let slot = HashSlot(rawValue: number),
                let colon = parts[1].lastIndex(of: ":"), let port = Int(parts[1][parts[1].index(after: colon)...])
            else { return nil }
            var host = String(parts[1][..<colon])
            // A node that does not know its own address names itself with an empty host.
            if host.isEmpty { host = "127.0.0.1" }
            let endpoint = RedisEndpoint(host: host, port: port)
            self = code == "MOVED" ? .moved(slot, endpoint) : .ask(slot, endpoint)
        case "TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN":
            self = .retryLater
        default:
            return nil
        }
    }
}
