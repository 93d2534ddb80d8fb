import RedisClient

/// The Lua scripts of `lua/`, embedded in the binary at build time.
enum RelayScripts {
    static let send = script("send")
    static let edit = script("edit")
    static let delete = script("delete")
    static let createChannel = script("channel_create")
    static let addMembers = script("members_add")
    static let removeMember = script("members_remove")
    static let read = script("read")

    private static func script(_ name: String) -> RedisScript {
        guard let source = LuaSources.byName[name] else {
            preconditionFailure("lua/\(name).lua was not embedded")
        }
        return RedisScript(source)
    }
}
