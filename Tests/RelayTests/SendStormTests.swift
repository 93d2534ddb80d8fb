import Foundation
import TestSupport
import Testing

@Suite("Send storm", .timeLimit(.minutes(10)))
struct SendStormTests {
    /// 100 users send 50 messages each, all at once, into one group: the log is 1...N with no gap
    /// and no duplicate, and holds each acknowledged message exactly once.
    @Test func concurrentSendersGetGaplessUniqueSeqs() async throws {
        try await withRelay { relay in
            let owner = TestRedis.uniqueName("owner")
            let senders = (0..<100).map { TestRedis.uniqueName("s\($0)") }
            let messagesPerSender = 50
            let id = try await relay.createGroup(owner)
            let added = try await relay.request("POST", "/channels/\(id)/members", token: relay.token(owner), json: ["user_ids": senders])
            try #require(added.status == 200, "\(added)")
            let memberEvents = 1 + senders.count
            try #require(try await relay.lastSeq(owner, id) == memberEvents)

            struct Ack: Sendable, Hashable {
                var sender: String
                var clientMessageID: String
                var seq: Int
                var messageID: String
            }
            let acks = try await withThrowingTaskGroup(of: [Ack].self) { group in
                for sender in senders {
                    group.addTask {
                        var relay = relay
                        relay.requestTimeout = .seconds(120)
                        let token = relay.token(sender)
                        var acks: [Ack] = []
                        for index in 0..<messagesPerSender {
                            let clientMessageID = "\(sender)-\(index)"
                            let response = try await relay.request(
                                "POST",
                                "/channels/\(id)/messages",
                                token: token,
                                json: ["client_msg_id": clientMessageID, "text": "message \(index) from \(sender)"]
                            )
                            guard response.status == 201, let seq = response.value["message"]["seq"].int,
                                let messageID = response.value["message"]["message_id"].string
                            else {
                                throw TestFailure("send \(index) by \(sender): \(response)")
                            }
                            acks.append(Ack(sender: sender, clientMessageID: clientMessageID, seq: seq, messageID: messageID))
                        }
                        return acks
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            let total = memberEvents + senders.count * messagesPerSender
            #expect(acks.count == senders.count * messagesPerSender)
            #expect(Set(acks.map(\.seq)) == Set((memberEvents + 1)...total), "acknowledged seqs are unique and gapless")
            #expect(Set(acks.map(\.messageID)).count == acks.count, "message ids are unique")
            // Each sender's messages got increasing seqs, in the order it sent them.
            for sender in senders {
                let own = acks.filter { $0.sender == sender }.map(\.seq)
                #expect(own == own.sorted(), "\(sender)")
            }

            let events = try await relay.allEvents(owner, id)
            #expect(seqs(events) == Array(1...total), "history is 1...\(total), each seq once")
            #expect(try await relay.lastSeq(owner, id) == total)
            let messages = events.filter { $0["type"].string == "message" }
            #expect(messages.count == senders.count * messagesPerSender)
            #expect(events.filter { $0["type"].string == "member_joined" }.count == memberEvents)
            let logged = messages.map {
                Ack(
                    sender: $0["sender_id"].string ?? "?",
                    clientMessageID: $0["client_msg_id"].string ?? "?",
                    seq: $0["seq"].int ?? 0,
                    messageID: $0["message_id"].string ?? "?"
                )
            }
            #expect(Set(logged) == Set(acks), "history holds exactly the acknowledged messages, with their seqs and ids")
            #expect(Set(logged.map { "\($0.sender)/\($0.clientMessageID)" }).count == logged.count, "no (sender, client_msg_id) twice")
        }
    }
}
