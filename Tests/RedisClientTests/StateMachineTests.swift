import NIOCore
import NIOEmbedded
import NIOPosix
import Testing

@testable import RedisClient

@Suite("Connection state machine")
struct StateMachineTests {
    typealias Machine = RedisChannelHandler.StateMachine<String>
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    @Test func repliesGoToRequestsInOrder() {
        var machine = Machine()
        for (id, name) in ["a", "b", "c"].enumerated() {
            guard case .write = machine.send(id: UInt64(id), continuation: name, deadline: start) else {
                Issue.record("send refused")
                return
            }
        }
        var order = [String]()
        for _ in 0..<3 {
            if case .succeed(let name) = machine.receivedReply() { order.append(name) }
        }
        #expect(order == ["a", "b", "c"])
        #expect(machine.pendingCount == 0)
    }

    @Test func aReplyWithNoRequestClosesTheConnection() {
        var machine = Machine()
        guard case .closeConnection(let error) = machine.receivedReply() else {
            Issue.record("expected closeConnection")
            return
        }
        #expect(error.code == .protocolViolation)
    }

    @Test func aCancelledRequestKeepsItsPlaceAndItsReplyIsDropped() {
        var machine = Machine()
        _ = machine.send(id: 1, continuation: "first", deadline: start)
        _ = machine.send(id: 2, continuation: "second", deadline: start)
        guard case .fail(let cancelled) = machine.cancel(id: 1) else {
            Issue.record("expected fail")
            return
        }
        #expect(cancelled == "first")
        guard case .none = machine.cancel(id: 1) else {
            Issue.record("a second cancel must do nothing")
            return
        }
        guard case .drop = machine.receivedReply() else {
            Issue.record("the cancelled request's reply must be dropped")
            return
        }
        guard case .succeed(let name) = machine.receivedReply() else {
            Issue.record("expected succeed")
            return
        }
        #expect(name == "second")
    }

    @Test func theHeadTimingOutFailsEveryoneAndClosesTheMachine() {
        var machine = Machine()
        _ = machine.send(id: 1, continuation: "a", deadline: start)
        _ = machine.send(id: 2, continuation: "b", deadline: start + .seconds(1))
        _ = machine.send(id: 3, continuation: "c", deadline: start + .seconds(2))
        _ = machine.cancel(id: 2)
        guard case .schedule(let deadline) = machine.checkDeadline(now: start - .milliseconds(1)) else {
            Issue.record("expected schedule")
            return
        }
        #expect(deadline == start)
        guard case .timeout(let failures) = machine.checkDeadline(now: start) else {
            Issue.record("expected timeout")
            return
        }
        #expect(failures.map(\.0) == ["a", "c"])
        #expect(failures.map(\.1.code) == [.timeout, .connectionClosed])
        guard case .fail(_, let error) = machine.send(id: 4, continuation: "d", deadline: start) else {
            Issue.record("a closed machine must refuse sends")
            return
        }
        #expect(error.isRetriable)
    }

    @Test func closingFailsEveryPendingRequestOnce() {
        var machine = Machine()
        _ = machine.send(id: 1, continuation: "a", deadline: start)
        _ = machine.send(id: 2, continuation: "b", deadline: start)
        let failed = machine.close(error: RedisError(.connectionClosed, "gone"))
        #expect(failed == ["a", "b"])
        #expect(machine.close(error: RedisError(.connectionClosed, "again")).isEmpty)
        guard case .none = machine.checkDeadline(now: start + .seconds(10)) else {
            Issue.record("no timer after close")
            return
        }
    }

    @Test func pushesAreRecognised() {
        let message = RESPValue.array([
            .bulkString(ByteBuffer(string: "smessage")), .bulkString(ByteBuffer(string: "t")), .bulkString(ByteBuffer(string: "p")),
        ])
        let pong = RESPValue.array([.bulkString(ByteBuffer(string: "pong")), .bulkString(ByteBuffer(string: ""))])
        let reply = RESPValue.array([.bulkString(ByteBuffer(string: "message")), .integer(1)])
        #expect(RedisChannelHandler.isPush(message))
        #expect(!RedisChannelHandler.isPush(pong))
        #expect(!RedisChannelHandler.isPush(reply))
    }

    /// A connection that failed refuses what is sent after, but not within the call: a caller
    /// on its loop that sends again on each failure would otherwise go one call deeper each time.
    @Test func aCommandRefusedByAFailedConnectionFailsAfterTheCall() throws {
        let channel = EmbeddedChannel()
        let handler = RedisChannelHandler()
        try channel.pipeline.syncOperations.addHandler(handler)
        // A read error: the connection fails what it holds and closes.
        channel.pipeline.fireErrorCaught(IOError(errnoCode: ECONNRESET, reason: "read"))
        for pipelined in [false, true] {
            let promise = channel.eventLoop.makePromise(of: RESPValue.self)
            let failed = NIOLoopBoundBox(false, eventLoop: channel.eventLoop)
            promise.futureResult.whenFailure { _ in failed.value = true }
            let ping = ByteBuffer(string: "*1\r\n$4\r\nPING\r\n")
            if pipelined {
                handler.send(ping, ids: 1..<2, completions: [.promise(promise)], deadline: .distantFuture)
            } else {
                handler.send(ping, id: 1, completion: .promise(promise), deadline: .distantFuture)
            }
            #expect(!failed.value, "failed within the call (pipelined: \(pipelined))")
            channel.embeddedEventLoop.run()
            #expect(failed.value, "never failed (pipelined: \(pipelined))")
        }
    }
}
