import RedisClient

/// The Lua scripts of `lua/`, embedded in the binary at build time, each behind
/// `lua/prelude.lua` (the one append every script shares), with the retention settings
/// written into the prelude.
struct RelayScripts: Sendable {
    let send: RedisScript
    /// An edit or a deletion (`lua/change.lua`).
    let change: RedisScript
    let createChannel: RedisScript
    let addMembers: RedisScript
    let removeMember: RedisScript
    let read: RedisScript

    /// The prelude's line that holds the retention limits; it must be there exactly once.
    static let retentionLine = "local RETAIN_EVENTS, RETAIN_MS = 0, 0"

    init(retention: RelayRetention = RelayRetention()) {
        let prelude = Self.prelude(retention: retention)
        func script(_ name: String) -> RedisScript {
            guard let source = LuaSources.byName[name] else {
                preconditionFailure("lua/\(name).lua was not embedded")
            }
            return RedisScript(prelude + source)
        }
        self.send = script("send")
        self.change = script("change")
        self.createChannel = script("channel_create")
        self.addMembers = script("members_add")
        self.removeMember = script("members_remove")
        self.read = script("read")
    }

    static func prelude(retention: RelayRetention) -> String {
        guard let source = LuaSources.byName["prelude"], source.contains(Self.retentionLine) else {
            preconditionFailure("lua/prelude.lua was not embedded, or lacks its retention line")
        }
        let milliseconds = Int64(retention.maxAgeDays) * 86_400_000
        let line = "local RETAIN_EVENTS, RETAIN_MS = \(retention.maxEvents), \(milliseconds)"
        return source.replacing(Self.retentionLine, with: line) + "\n"
    }
}
