import RedisClient

/// Redis key and topic names. Every key of a channel carries the hash tag `{channel_id}` and
/// every key of a user `{user_id}`, so that a cluster keeps each together (ids cannot contain
/// braces, so the tag is always the id). The README lists each key with what it holds.
enum RelayKeys {
    struct Channel {
        let id: String
        init(_ id: String) { self.id = id }

        /// The last part of each of the channel's keys, after `ch:{<id>}:`.
        enum Name: String {
            case meta, members, seq, log, reads, membership, dedup
            case messages = "msgs"
            case topic = "live"
            case dedupExpiry = "dedupx"
        }

        /// The channel's key `name`.
        func key(_ name: Name) -> String { "ch:{\(self.id)}:\(name.rawValue)" }

        /// Appends the channel's key `name` to `command`, without a string made of it.
        func append(_ name: Name, to command: inout RedisCommand) {
            command.appendArgument { bytes in
                bytes.append(contentsOf: "ch:{".utf8)
                bytes.append(contentsOf: self.id.utf8)
                bytes.append(contentsOf: "}:".utf8)
                bytes.append(contentsOf: name.rawValue.utf8)
            }
        }

        var meta: String { self.key(.meta) }
        var members: String { self.key(.members) }
        var seq: String { self.key(.seq) }
        var log: String { self.key(.log) }
        var messages: String { self.key(.messages) }
        var reads: String { self.key(.reads) }
        /// Each user's `member_joined` and `member_left` seqs (``MembershipRecord``): a hash.
        var membership: String { self.key(.membership) }
        /// The keys of the scripts that change membership, in their `KEYS` order.
        var membershipScriptKeys: [String] { [self.meta, self.members, self.seq, self.log, self.messages, self.membership] }
        /// The field of ``meta`` that holds, with `--redis-wait`, the highest seq replicas were
        /// seen to hold (`lua/commit.lua`): readers of the log stop there.
        static let replicatedSeq = "replicated_seq"
        /// `HGET` of ``replicatedSeq``.
        var replicatedSeqCommand: RedisCommand { RedisCommand("HGET", key: self.meta, [self.meta, Self.replicatedSeq]) }
        /// Sharded Pub/Sub topic on which every appended event is published as `<seq> <json>`.
        var topic: String { self.key(.topic) }

        /// The first event's seq of each `<sender>:<client_msg_id>` sent in the channel
        /// (``appendDedupEntry(sender:clientMessageID:to:)``), while its entry lives.
        var dedup: String { self.key(.dedup) }
        /// When each entry of ``dedup`` expires (ms): a sorted set.
        var dedupExpiry: String { self.key(.dedupExpiry) }

        /// Appends a ``dedup`` entry's field, `<sender>:<client_msg_id>`, to `command` (without a
        /// string made of it): ids hold no `:`, so the sender ends at the first.
        static func appendDedupEntry(sender: String, clientMessageID: String, to command: inout RedisCommand) {
            command.appendArgument { bytes in
                bytes.append(contentsOf: sender.utf8)
                bytes.append(UInt8(ascii: ":"))
                bytes.append(contentsOf: clientMessageID.utf8)
            }
        }
    }

    struct User {
        let id: String
        init(_ id: String) { self.id = id }

        /// The channels the user belongs to (an index; the channel's member set is the truth).
        var channels: String { "user:{\(self.id)}:channels" }
        /// Exists while the user has a live connection (a TTL of two heartbeats).
        var presence: String { "user:{\(self.id)}:presence" }
        /// Sharded Pub/Sub topic telling the user's connections that their channel set changed,
        /// that they joined a channel, or that a session's read cursor moved.
        var topic: String { "user:{\(self.id)}:live" }
    }

    /// The topic's channel id, if `topic` is a channel topic.
    static func channelID(fromTopic topic: String) -> Substring? {
        guard topic.hasPrefix("ch:{"), topic.hasSuffix("}:live") else { return nil }
        return topic.dropFirst(4).dropLast(6)
    }
}
