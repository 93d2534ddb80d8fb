import RedisClient

/// The Lua scripts of `lua/`, embedded in the binary at build time, each behind
/// `lua/prelude.lua` (the one append every script shares), with the retention settings
/// written into the prelude.
///
/// Made with `publishing` false (the relay's `--redis-wait` above 0), the scripts publish
/// nothing: each answers `{reply, payloads}`, and the relay publishes the payloads itself once
/// replicas hold the write (``commit``, see ``ChatStore``). Readers of the log then stop at the
/// last event replicas are known to hold (``logPage``).
struct RelayScripts: Sendable {
    let send: RedisScript
    /// An edit or a deletion (`lua/change.lua`).
    let change: RedisScript
    let createChannel: RedisScript
    let addMembers: RedisScript
    let removeMember: RedisScript
    let read: RedisScript
    /// Publishes events the relay kept, once replicas hold them, and moves the channel's
    /// `replicated_seq` up to them (`lua/commit.lua`, no prelude).
    let commit: RedisScript
    /// A page of the log up to the channel's `replicated_seq` (`lua/log_page.lua`, no prelude).
    let logPage: RedisScript

    /// Whether the scripts publish their events themselves (`SPUBLISH` in the prelude's `append`).
    let publishes: Bool

    /// The prelude's line that holds the retention limits; it must be there exactly once.
    static let retentionLine = "local RETAIN_EVENTS, RETAIN_MS = 0, 0"
    /// The prelude's line that makes `append` publish at once; it must be there exactly once.
    static let deferredLine = "local DEFERRED = nil"

    init(retention: RelayRetention = RelayRetention(), publishing: Bool = true) {
        self.publishes = publishing
        var prelude = Self.prelude(retention: retention)
        if !publishing {
            prelude = prelude.replacing(Self.deferredLine, with: "local DEFERRED = {}")
        }
        func script(_ name: String) -> RedisScript {
            guard let source = LuaSources.byName[name] else {
                preconditionFailure("lua/\(name).lua was not embedded")
            }
            guard !publishing else { return RedisScript(prelude + source) }
            // The script becomes a function, so that what it answers comes back beside the
            // payloads it kept. Error replies stay error replies; a nil reply stays nil.
            return RedisScript(
                prelude + "local function script()\n" + source + "\nend\n"
                    + "local reply = script()\n"
                    + "if type(reply) == 'table' and reply.err then return reply end\n"
                    + "if reply == nil then reply = false end\n"
                    + "return {reply, DEFERRED}\n"
            )
        }
        self.send = script("send")
        self.change = script("change")
        self.createChannel = script("channel_create")
        self.addMembers = script("members_add")
        self.removeMember = script("members_remove")
        self.read = script("read")
        func standalone(_ name: String) -> RedisScript {
            guard let source = LuaSources.byName[name] else { preconditionFailure("lua/\(name).lua was not embedded") }
            return RedisScript(source)
        }
        self.commit = standalone("commit")
        self.logPage = standalone("log_page")
    }

    static func prelude(retention: RelayRetention) -> String {
        guard let source = LuaSources.byName["prelude"], source.contains(Self.retentionLine), source.contains(Self.deferredLine)
        else {
            preconditionFailure("lua/prelude.lua was not embedded, or lacks its retention or deferral line")
        }
        let milliseconds = Int64(retention.maxAgeDays) * 86_400_000
        let line = "local RETAIN_EVENTS, RETAIN_MS = \(retention.maxEvents), \(milliseconds)"
        return source.replacing(Self.retentionLine, with: line) + "\n"
    }
}
