import NIOCore
import Testing

@testable import Relay

/// The live connection's ordering rules, without sockets or Redis: the fast path, gap fill
/// from the log, membership exact at a seq, resume, writability, the client frame queue.
@Suite("Live connection state machine")
struct LiveConnectionStateMachineTests {
    typealias Machine = LiveConnectionHandler.StateMachine

    func frame(_ channel: String, _ seq: Int64) -> ByteBuffer {
        ByteBuffer(string: "{\"channel_id\":\"\(channel)\",\"seq\":\(seq)}")
    }

    func logEvents(_ channel: String, _ seqs: ClosedRange<Int64>, leaving user: String? = nil) -> [Machine.LogEvent] {
        seqs.map { seq in
            Machine.LogEvent(
                seq: seq,
                frame: self.frame(channel, seq),
                membership: (user != nil && seq == seqs.upperBound) ? .left(user: user!) : nil
            )
        }
    }

    func openMachine(_ anchors: [String: Int64], pageSize: Int = 3) -> Machine {
        var machine = Machine(user: "me", pageSize: pageSize)
        let outcome = machine.started(anchors: anchors)
        #expect(outcome.isEmpty)
        return machine
    }

    @Test func inOrderEventsGoOutAtOnceAndDuplicatesAreDropped() {
        var machine = self.openMachine(["c": 4])
        #expect(machine.liveEvent(channel: "c", seq: 5, frame: frame("c", 5), membership: nil) == .write(frame("c", 5)))
        #expect(machine.liveEvent(channel: "c", seq: 5, frame: frame("c", 5), membership: nil) == .none, "a duplicate")
        #expect(machine.liveEvent(channel: "c", seq: 3, frame: frame("c", 3), membership: nil) == .none, "an old one")
        #expect(machine.liveEvent(channel: "other", seq: 1, frame: frame("other", 1), membership: nil) == .none, "not followed")
        #expect(machine.streams["c"]?.delivered == 5)
    }

    @Test func anOwnMessageThatContinuesTheStreamGoesOutWithItsAckAndItsLiveCopyIsDropped() {
        var machine = self.openMachine(["c": 4, "d": 2])
        #expect(machine.ownEvent(channel: "c", seq: 5) == true)
        #expect(machine.streams["c"]?.delivered == 5)
        #expect(machine.liveEvent(channel: "c", seq: 5, frame: frame("c", 5), membership: nil) == .none, "its live copy")
        #expect(machine.liveEvent(channel: "c", seq: 6, frame: frame("c", 6), membership: nil) == .write(frame("c", 6)))
        // A gap (another sender's event still on its way): nothing changes, the live copies bring both.
        #expect(machine.ownEvent(channel: "d", seq: 4) == false)
        #expect(machine.streams["d"]?.delivered == 2)
        #expect(machine.liveEvent(channel: "d", seq: 3, frame: frame("d", 3), membership: nil) == .write(frame("d", 3)))
        #expect(machine.liveEvent(channel: "d", seq: 4, frame: frame("d", 4), membership: nil) == .write(frame("d", 4)))
        // Already delivered live, a channel not followed, a read under way: not written again.
        #expect(machine.ownEvent(channel: "d", seq: 4) == false)
        #expect(machine.ownEvent(channel: "other", seq: 1) == false)
        #expect(
            machine.liveEvent(channel: "c", seq: 9, frame: frame("c", 9), membership: nil)
                == .read(Machine.LogRead(channel: "c", after: 6, limit: 3))
        )
        #expect(machine.ownEvent(channel: "c", seq: 7) == false, "the read delivers it, in order")
        #expect(machine.streams["c"]?.delivered == 6)
    }

    @Test func nothingOwnGoesOutBeforeTheStartOrAfterTheClose() {
        var machine = Machine(user: "me")
        #expect(machine.ownEvent(channel: "c", seq: 1) == false, "still starting")
        _ = machine.started(anchors: ["c": 0])
        machine.close()
        #expect(machine.ownEvent(channel: "c", seq: 1) == false)
    }

    @Test func aGapIsFilledFromTheLogAndLiveEventsMeanwhileAreReadThere() {
        var machine = self.openMachine(["c": 4])
        let read = Machine.LogRead(channel: "c", after: 4, limit: 3)
        #expect(machine.liveEvent(channel: "c", seq: 7, frame: frame("c", 7), membership: nil) == .read(read))
        // While the read is on its way, live events only raise the target.
        #expect(machine.liveEvent(channel: "c", seq: 8, frame: frame("c", 8), membership: nil) == .none)
        #expect(machine.liveEvent(channel: "c", seq: 5, frame: frame("c", 5), membership: nil) == .none)
        var outcome = machine.logPage(read, events: logEvents("c", 5...7))
        #expect(outcome.frames == [frame("c", 5), frame("c", 6), frame("c", 7)])
        let next = Machine.LogRead(channel: "c", after: 7, limit: 3)
        #expect(outcome.reads == [next], "a full page: read on")
        outcome = machine.logPage(next, events: logEvents("c", 8...8))
        #expect(outcome.frames == [frame("c", 8)])
        #expect(outcome.reads.isEmpty, "caught up with the log")
        #expect(machine.liveEvent(channel: "c", seq: 9, frame: frame("c", 9), membership: nil) == .write(frame("c", 9)), "live again")
    }

    /// A page of the log writes at most its bytes (and at least one event), whatever its count:
    /// the rest is read again, in pages of as many events as fitted, doubling back up after a
    /// page that fits. So a replay of large events never writes more than the budget allows.
    @Test func aPageOfLargeEventsStopsAtItsBytesAndTheNextPagesAreSmaller() {
        var machine = Machine(user: "me", pageSize: 8, pageBytes: 1000)
        #expect(machine.started(anchors: ["c": 0]).isEmpty)
        func events(_ seqs: ClosedRange<Int64>, size: Int) -> [Machine.LogEvent] {
            seqs.map { Machine.LogEvent(seq: $0, frame: ByteBuffer(repeating: UInt8(ascii: "x"), count: size), membership: nil) }
        }
        let first = Machine.LogRead(channel: "c", after: 0, limit: 8)
        #expect(machine.liveEvent(channel: "c", seq: 40, frame: frame("c", 40), membership: nil) == .read(first))
        // 400 bytes each: 400, 800, 1200 (past 1000): three written, the rest read again.
        var outcome = machine.logPage(first, events: events(1...8, size: 400))
        #expect(outcome.frames.count == 3)
        #expect(machine.streams["c"]?.delivered == 3)
        let second = Machine.LogRead(channel: "c", after: 3, limit: 3)
        #expect(outcome.reads == [second], "as many events as fitted")
        // One event larger than the page's bytes still goes, alone.
        outcome = machine.logPage(second, events: events(4...6, size: 5000))
        #expect(outcome.frames.count == 1)
        let third = Machine.LogRead(channel: "c", after: 4, limit: 1)
        #expect(outcome.reads == [third])
        // Small events again: full pages double the limit back up to the page size.
        outcome = machine.logPage(third, events: events(5...5, size: 10))
        #expect(outcome.reads == [Machine.LogRead(channel: "c", after: 5, limit: 2)])
        outcome = machine.logPage(outcome.reads[0], events: events(6...7, size: 10))
        #expect(outcome.reads == [Machine.LogRead(channel: "c", after: 7, limit: 4)])
        outcome = machine.logPage(outcome.reads[0], events: events(8...11, size: 10))
        #expect(outcome.reads == [Machine.LogRead(channel: "c", after: 11, limit: 8)])
        outcome = machine.logPage(outcome.reads[0], events: events(12...19, size: 10))
        #expect(outcome.reads == [Machine.LogRead(channel: "c", after: 19, limit: 8)])
        // Bytes another page left on the socket count: 900 of 1000 spent, one event fits.
        outcome = machine.logPage(outcome.reads[0], events: events(20...27, size: 400), buffered: 900)
        #expect(outcome.frames.count == 1)
        #expect(outcome.reads == [Machine.LogRead(channel: "c", after: 20, limit: 1)])
        // A socket that takes no more gets nothing of a page whose room is spent, and the read
        // waits for it to drain.
        _ = machine.writabilityChanged(false)
        outcome = machine.logPage(outcome.reads[0], events: events(21...21, size: 400), buffered: 1200)
        #expect(outcome.frames.isEmpty && outcome.reads.isEmpty)
        #expect(machine.streams["c"]?.delivered == 20)
        #expect(machine.writabilityChanged(true).reads == [Machine.LogRead(channel: "c", after: 20, limit: 1)])
    }

    /// While pages of a replay fill the socket, live events of channels that are caught up wait
    /// in the log (their seq only) and come with a page once the socket drains: a reading
    /// client is never closed as too slow for what the replay queued. They wait so for a few
    /// seconds at most: a socket that takes nothing for longer is a slow consumer. Long after the
    /// last page, a socket filled by live events alone is written to as before (the budget
    /// decides).
    @Test func liveEventsWaitInTheLogWhilePagesFillTheSocket() {
        var machine = Machine(user: "me", pageSize: 3, liveDeferral: .seconds(5))
        #expect(machine.started(anchors: ["c": 4, "d": 10, "e": 20]).isEmpty)
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        func at(_ seconds: Int64) -> () -> NIODeadline { { start + .seconds(seconds) } }
        func live(_ channel: String, _ seq: Int64, at seconds: Int64) -> Machine.EventAction {
            machine.liveEvent(channel: channel, seq: seq, frame: frame(channel, seq), membership: nil, now: at(seconds))
        }
        let read = Machine.LogRead(channel: "c", after: 4, limit: 3)
        #expect(machine.liveEvent(channel: "c", seq: 9, frame: frame("c", 9), membership: nil) == .read(read))
        var outcome = machine.logPage(read, events: logEvents("c", 5...7), now: start)
        #expect(outcome.frames.count == 3)
        let next = Machine.LogRead(channel: "c", after: 7, limit: 3)
        #expect(outcome.reads == [next], "a full page: read on")
        _ = machine.writabilityChanged(false)
        // "d" is caught up, but the socket is full of "c"'s pages: its events wait in the log.
        #expect(live("d", 11, at: 1) == .none)
        #expect(live("d", 12, at: 2) == .none)
        #expect(machine.ownEvent(channel: "d", seq: 13, now: at(2)) == false, "an own message waits as well")
        #expect(machine.streams["d"]?.delivered == 10)
        #expect(machine.streams["d"]?.readDue == true)
        // Drained: "d" is read from where it stands.
        let reads = machine.writabilityChanged(true).reads
        #expect(reads == [Machine.LogRead(channel: "d", after: 10, limit: 3)])
        outcome = machine.logPage(reads[0], events: logEvents("d", 11...12), now: start + .seconds(3))
        #expect(outcome.frames == [frame("d", 11), frame("d", 12)] && outcome.reads.isEmpty)
        outcome = machine.logPage(next, events: logEvents("c", 8...9), now: start + .seconds(3))
        #expect(outcome.frames == [frame("c", 8), frame("c", 9)] && outcome.reads.isEmpty)
        // Full again: waiting starts with the first live event, and ends as too slow once the
        // socket has taken nothing for five seconds.
        _ = machine.writabilityChanged(false)
        #expect(live("d", 13, at: 4) == .none)
        #expect(live("e", 21, at: 9) == .none, "within five seconds")
        #expect(live("e", 22, at: 10) == .tooSlow)
        #expect(machine.writabilityChanged(true).reads.count == 2, "\"d\" and \"e\" are read once it drains")
    }

    @Test func longAfterTheLastPageLiveEventsAreWrittenToAFullSocket() {
        var machine = Machine(user: "me", pageSize: 3, liveDeferral: .seconds(5))
        #expect(machine.started(anchors: ["c": 4, "d": 10]).isEmpty)
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let read = Machine.LogRead(channel: "c", after: 4, limit: 3)
        #expect(machine.liveEvent(channel: "c", seq: 6, frame: frame("c", 6), membership: nil) == .read(read))
        #expect(machine.logPage(read, events: logEvents("c", 5...6), now: start).reads.isEmpty)
        _ = machine.writabilityChanged(false)
        let later = { start + .seconds(6) }
        #expect(machine.liveEvent(channel: "d", seq: 11, frame: frame("d", 11), membership: nil, now: later) == .write(frame("d", 11)))
        #expect(machine.ownEvent(channel: "c", seq: 7, now: later) == true)
    }

    /// The log has no gap but where retention trimmed it: a page that skips seqs means events
    /// this connection never got are gone. It writes what continues its stream and then falls
    /// behind (4008), never skipping a seq.
    @Test func aGapTheLogNoLongerHoldsIsNeverSkipped() {
        var machine = self.openMachine(["c": 4])
        let read = Machine.LogRead(channel: "c", after: 4, limit: 3)
        #expect(machine.liveEvent(channel: "c", seq: 9, frame: frame("c", 9), membership: nil) == .read(read))
        var outcome = machine.logPage(read, events: logEvents("c", 5...5) + logEvents("c", 8...9))
        #expect(outcome.frames == [frame("c", 5)], "up to the gap, and nothing after it")
        #expect(outcome.fellBehind)
        #expect(machine.streams["c"]?.delivered == 5)

        var trimmed = self.openMachine(["c": 4])
        let first = Machine.LogRead(channel: "c", after: 4, limit: 3)
        _ = trimmed.liveEvent(channel: "c", seq: 12, frame: frame("c", 12), membership: nil)
        outcome = trimmed.logPage(first, events: logEvents("c", 8...10))
        #expect(outcome.frames.isEmpty)
        #expect(outcome.fellBehind)

        // A page that continues the stream does not.
        var whole = self.openMachine(["c": 4])
        _ = whole.liveEvent(channel: "c", seq: 6, frame: frame("c", 6), membership: nil)
        #expect(whole.logPage(first, events: logEvents("c", 5...6)).fellBehind == false)
    }

    /// Removed and added again while a read of the log was under way (the `joined` notice came
    /// before the stream reached the `member_left`): the stream ends at the `member_left`, skips
    /// what was posted while the user was out, and goes on at the new `member_joined`.
    @Test func aUserRemovedAndAddedAgainDuringAReadGetsBothWindowsAndNothingBetween() {
        var machine = self.openMachine(["c": 15], pageSize: 10)
        let read = Machine.LogRead(channel: "c", after: 15, limit: 10)
        #expect(machine.liveEvent(channel: "c", seq: 17, frame: frame("c", 17), membership: .left(user: "me")) == .read(read))
        #expect(machine.joined(channel: "c", seq: 19).reads.isEmpty, "followed still, and read already")
        #expect(machine.joined(channel: "c", seq: 22).reads.isEmpty)
        var page = logEvents("c", 16...23)
        page[1].membership = .left(user: "me")  // 17
        page[3].membership = .joined(user: "me")  // 19
        page[4].membership = .left(user: "me")  // 20
        page[6].membership = .joined(user: "me")  // 22
        let outcome = machine.logPage(read, events: page)
        #expect(outcome.frames == [16, 17, 19, 20, 22, 23].map { frame("c", $0) }, "18 and 21 were posted while the user was out")
        #expect(outcome.left.isEmpty)
        #expect(machine.following == ["c"])
        #expect(machine.liveEvent(channel: "c", seq: 24, frame: frame("c", 24), membership: nil) == .write(frame("c", 24)))
    }

    /// Notices and channel-set reads arrive late and out of step with the channel's events: a
    /// join the stream already read past is ignored, and one after where the stream ended starts
    /// from there, so that a window the user was in meanwhile comes first, in order.
    @Test func aLateJoinIsIgnoredAndALaterOneStartsWhereTheStreamEnded() {
        var machine = self.openMachine(["c": 15], pageSize: 10)
        let action = machine.liveEvent(channel: "c", seq: 16, frame: frame("c", 16), membership: .left(user: "me"))
        #expect(action == .writeAndLeave(frame("c", 16), channel: "c"))
        #expect(machine.joined(channel: "c", seq: 14).isEmpty, "old news: the stream read past it")
        #expect(machine.found(channels: ["c": 15]).isEmpty, "a read of the channel set from before the member_left")
        // Added at 18 (notice not here yet) and at 21: a read of the channel set finds the last join.
        let outcome = machine.found(channels: ["c": 20])
        let read = Machine.LogRead(channel: "c", after: 16, limit: 10)
        #expect(outcome.reads == [read], "from where the stream ended, not from 20")
        var page = logEvents("c", 17...22)
        page[1].membership = .joined(user: "me")  // 18
        page[2].membership = .left(user: "me")  // 19
        page[4].membership = .joined(user: "me")  // 21
        #expect(machine.logPage(read, events: page).frames == [18, 19, 21, 22].map { frame("c", $0) })
        #expect(machine.joined(channel: "c", seq: 18).reads.isEmpty, "the notice of 18, late: nothing more")
        #expect(machine.liveEvent(channel: "c", seq: 23, frame: frame("c", 23), membership: nil) == .write(frame("c", 23)))
    }

    /// Without a later `member_joined`, the stream ends at the `member_left` as ever, and a
    /// notice of a join before it changes nothing.
    @Test func aJoinNoticeBeforeTheMemberLeftDoesNotKeepTheStream() {
        var machine = self.openMachine(["c": 15])
        #expect(machine.joined(channel: "c", seq: 12).isEmpty)
        let action = machine.liveEvent(channel: "c", seq: 16, frame: frame("c", 16), membership: .left(user: "me"))
        #expect(action == .writeAndLeave(frame("c", 16), channel: "c"))
        #expect(machine.following.isEmpty)
    }

    @Test func theStreamStopsRightAfterItsUsersOwnMemberLeft() {
        var machine = self.openMachine(["c": 1, "d": 1])
        let action = machine.liveEvent(channel: "c", seq: 2, frame: frame("c", 2), membership: .left(user: "me"))
        #expect(action == .writeAndLeave(frame("c", 2), channel: "c"))
        #expect(machine.liveEvent(channel: "c", seq: 3, frame: frame("c", 3), membership: nil) == .none, "nothing after it")
        #expect(machine.following == ["d"])
        // Someone else leaving changes nothing.
        #expect(machine.liveEvent(channel: "d", seq: 2, frame: frame("d", 2), membership: .left(user: "you")) == .write(frame("d", 2)))
    }

    @Test func aReplayStopsAtTheUsersMemberLeftEvenMidPage() {
        var machine = self.openMachine(["c": 1], pageSize: 10)
        let read = Machine.LogRead(channel: "c", after: 1, limit: 10)
        #expect(machine.liveEvent(channel: "c", seq: 9, frame: frame("c", 9), membership: nil) == .read(read))
        var page = logEvents("c", 2...9)
        page[3].membership = .left(user: "me")  // seq 5
        let outcome = machine.logPage(read, events: page)
        #expect(outcome.frames == [frame("c", 2), frame("c", 3), frame("c", 4), frame("c", 5)])
        #expect(outcome.left == ["c"])
        #expect(machine.following.isEmpty)
    }

    @Test func aChannelJoinedStartsAtTheUsersOwnMemberJoined() {
        var machine = self.openMachine([:])
        let outcome = machine.joined(channel: "new", seq: 12)
        #expect(outcome.reads == [Machine.LogRead(channel: "new", after: 11, limit: 3)])
        #expect(machine.joined(channel: "new", seq: 12).isEmpty, "followed already")
        // Live events before the page is in wait for it.
        #expect(machine.liveEvent(channel: "new", seq: 13, frame: frame("new", 13), membership: nil) == .none)
        var events = logEvents("new", 12...13)
        events[0].membership = .joined(user: "me")
        let page = machine.logPage(outcome.reads[0], events: events)
        #expect(page.frames == [frame("new", 12), frame("new", 13)])
    }

    @Test func eventsAndJoinsBeforeTheStartAreNotLost() {
        var machine = Machine(user: "me", pageSize: 5)
        #expect(machine.liveEvent(channel: "c", seq: 8, frame: frame("c", 8), membership: nil) == .none)
        #expect(machine.joined(channel: "j", seq: 3).isEmpty)
        let outcome = machine.started(anchors: ["c": 7])
        #expect(
            outcome.reads == [Machine.LogRead(channel: "c", after: 7, limit: 5), Machine.LogRead(channel: "j", after: 2, limit: 5)]
        )
    }

    @Test func readsWaitWhileTheSocketIsFull() {
        var machine = self.openMachine(["c": 1])
        _ = machine.writabilityChanged(false)
        #expect(machine.liveEvent(channel: "c", seq: 3, frame: frame("c", 3), membership: nil) == .none, "due, not started")
        #expect(machine.streams["c"]?.readDue == true)
        let outcome = machine.writabilityChanged(true)
        #expect(outcome.reads == [Machine.LogRead(channel: "c", after: 1, limit: 3)])
    }

    @Test func resumeReplaysFromTheCursorAndAnswersOnceEveryChannelCaughtUp() {
        var machine = self.openMachine(["a": 10, "b": 5])
        let (errors, outcome) = machine.resumeLookedUp(
            cursors: [("a", 8), ("b", 5), ("g", 0), ("x", 0)],
            lookups: [
                "a": .member(lastSeq: 10, firstSeq: 1), "b": .member(lastSeq: 5, firstSeq: 1), "g": .forbidden, "x": .notFound,
            ]
        )
        #expect(errors.map(\.json).allSatisfy { $0.contains("\"type\":\"error\"") })
        #expect(errors.count == 2)
        #expect(errors[0].json.contains("forbidden") && errors[1].json.contains("not_found"))
        #expect(outcome.answer == nil, "not before the replays")
        let readA = Machine.LogRead(channel: "a", after: 8, limit: 3)
        let readB = Machine.LogRead(channel: "b", after: 5, limit: 3)
        #expect(outcome.reads == [readA, readB])
        let pageB = machine.logPage(readB, events: [])
        #expect(pageB.answer == nil, "a still replaying")
        let pageA = machine.logPage(readA, events: logEvents("a", 9...10))
        #expect(pageA.frames == [frame("a", 9), frame("a", 10)])
        #expect(pageA.answer == .resumed(truncated: [:]))
    }

    /// A channel Redis could not be asked about (its shard down) is answered `unavailable` with
    /// its `channel_id`, and stays as it was; the others resume, and `resumed` still comes.
    @Test func aChannelRedisCouldNotBeAskedAboutIsAnsweredAloneAndTheOthersResume() {
        var machine = self.openMachine(["a": 10, "d": 4])
        let (errors, outcome) = machine.resumeLookedUp(
            cursors: [("a", 8), ("d", 1), ("e", 0)],
            lookups: ["a": .member(lastSeq: 10, firstSeq: 1), "d": .unavailable]
        )
        #expect(errors.count == 2)
        #expect(errors.allSatisfy { $0.json.contains("\"code\":\"unavailable\"") })
        #expect(errors[0].json.contains("\"channel_id\":\"d\"") && errors[1].json.contains("\"channel_id\":\"e\""))
        #expect(machine.streams["d"]?.delivered == 4, "d goes on from where it was")
        let readA = Machine.LogRead(channel: "a", after: 8, limit: 3)
        #expect(outcome.reads == [readA])
        #expect(machine.logPage(readA, events: logEvents("a", 9...10)).answer == .resumed(truncated: [:]))

        let (none, nothing) = machine.resumeLookedUp(cursors: [("a", 10)], lookups: [:])
        #expect(none.count == 1 && none[0].json.contains("unavailable"), "Redis down: every channel named")
        #expect(nothing.answer == .resumed(truncated: [:]))
    }

    @Test func aCursorBelowTheLogsStartReplaysFromItAndSaysSo() {
        var machine = self.openMachine(["a": 100])
        let (_, outcome) = machine.resumeLookedUp(cursors: [("a", 3)], lookups: ["a": .member(lastSeq: 100, firstSeq: 60)])
        #expect(outcome.reads == [Machine.LogRead(channel: "a", after: 59, limit: 3)])
        var read = outcome.reads[0]
        var answer: ServerMessage?
        for _ in 0..<20 where answer == nil {
            let upper = min(read.after + 3, 100)
            let page = machine.logPage(read, events: logEvents("a", (read.after + 1)...upper))
            answer = page.answer
            if let next = page.reads.first { read = next }
        }
        #expect(answer == .resumed(truncated: ["a": 60]))
        #expect(ServerMessage.resumed(truncated: ["a": 60]).json == "{\"type\":\"resumed\",\"truncated\":{\"a\":60}}")
    }

    /// A resume from a cursor where the user was out writes nothing before its next
    /// `member_joined`; from one where it was in, everything up to its `member_left`, then
    /// nothing before the next join.
    @Test func aResumeStartsOutOfTheChannelWhereTheUserWasOut() throws {
        let record = try #require(MembershipRecord("j2 l4 j8"))
        var events = logEvents("a", 1...9)
        events[1].membership = .joined(user: "me")
        events[3].membership = .left(user: "me")
        events[7].membership = .joined(user: "me")
        for (cursor, expected) in [(4, [8, 9]), (6, [8, 9]), (1, [2, 3, 4, 8, 9]), (0, [1, 2, 3, 4, 8, 9]), (8, [9])] as [(Int64, [Int64])]
        {
            var machine = self.openMachine(["a": 9], pageSize: 20)
            let (_, outcome) = machine.resumeLookedUp(
                cursors: [("a", cursor)],
                lookups: ["a": .member(lastSeq: 9, firstSeq: 1, membership: record)]
            )
            let read = try #require(outcome.reads.first)
            let page = machine.logPage(read, events: Array(events[Int(cursor)...]))
            #expect(page.frames == expected.map { frame("a", $0) }, "from \(cursor)")
            #expect(page.answer == .resumed(truncated: [:]))
        }
    }

    @Test func aMembershipRecordSaysWhetherTheUserWasInAfterASeq() throws {
        let record = try #require(MembershipRecord("j2 l4 j8"))
        // Before the user's first join: what a resume from there promises is written.
        #expect([1, 2, 3, 4, 7, 8, 100].map { record.isMember(after: $0) } == [true, true, true, false, false, true, true])
        // Kept from a leave (a join made before records were kept): in before it.
        let legacy = try #require(MembershipRecord("l9 j12"))
        #expect([3, 9, 11, 12].map { legacy.isMember(after: $0) } == [true, false, false, true])
        // Older changes dropped: out before the first join kept, which may follow a leave.
        let trimmed = try #require(MembershipRecord("- j20 l25"))
        #expect([19, 20, 25].map { trimmed.isMember(after: $0) } == [false, true, false])
        #expect(MembershipRecord("- l20")?.isMember(after: 3) == true)
        for bad in ["", "-", "x1", "j", "j1 l-"] { #expect(MembershipRecord(bad) == nil, "\(bad)") }
    }

    @Test func aResumeThatMovesAStreamBackDiscardsThePageOnItsWay() {
        var machine = self.openMachine(["a": 10])
        let stale = Machine.LogRead(channel: "a", after: 10, limit: 3)
        #expect(machine.mayHaveMissed(channel: "a") == stale)
        let (_, outcome) = machine.resumeLookedUp(cursors: [("a", 4)], lookups: ["a": .member(lastSeq: 10, firstSeq: 1)])
        #expect(outcome.reads.isEmpty, "a read is in flight")
        let page = machine.logPage(stale, events: [])
        #expect(page.frames.isEmpty)
        #expect(page.reads == [Machine.LogRead(channel: "a", after: 4, limit: 3)], "read again from the cursor")
    }

    @Test func framesAreServedOneAtATimeInOrderAndBounded() {
        var machine = self.openMachine([:])
        let first = machine.frameReceived(.text(ByteBuffer(string: "1")), maxBytes: 1000)
        let second = machine.frameReceived(.text(ByteBuffer(string: "2")), maxBytes: 1000)
        #expect(first && second)
        #expect(machine.nextFrame() == .text(ByteBuffer(string: "1")))
        #expect(machine.nextFrame() == nil, "one at a time")
        machine.frameServed()
        _ = machine.writabilityChanged(false)
        #expect(machine.nextFrame() == nil, "not while the socket is full")
        #expect(!machine.wantsInput, "and no more is read")
        _ = machine.writabilityChanged(true)
        #expect(machine.nextFrame() == .text(ByteBuffer(string: "2")))
        let large = machine.frameReceived(.text(ByteBuffer(repeating: 0, count: 2000)), maxBytes: 1000)
        #expect(large, "one frame of any size, while the frames before it fit")
        let third = machine.frameReceived(.text(ByteBuffer(string: "3")), maxBytes: 1000)
        #expect(!third, "over the budget")
    }

    @Test func membershipIsReadFromTheEventJSON() {
        let left = #"{"channel_id":"c","seq":4,"type":"member_left","user_id":"bob","sender_id":"ann","created_at":1}"#
        let joined = #"{"channel_id":"c","seq":5,"type":"member_joined","user_id":"eve","sender_id":"ann","created_at":1}"#
        let message = #"{"channel_id":"c","seq":6,"type":"message","text":"\"type\":\"member_left\",\"user_id\":\"x\""}"#
        #expect(EventMembership.of(json: left) == .left(user: "bob"))
        #expect(EventMembership.of(json: joined) == .joined(user: "eve"))
        #expect(EventMembership.of(json: message) == nil)
    }

    @Test func errorsQuoteABoundedExcerptOfWhatTheClientSent() throws {
        let longType = String(repeating: "é", count: 10_000)
        let frame = ByteBuffer(string: "{\"type\":\"\(longType)\"}")
        guard case .rejected(let error) = ClientFrame.parse(frame, limits: RelayLimits()) else {
            Issue.record("an unknown type parsed")
            return
        }
        #expect(error.json.utf8.count < 300)
        #expect(ClientFrame.parse(ByteBuffer(string: #"{"type":"ping"}"#), limits: RelayLimits()) == .frame(.ping))
    }

    @Test func answersAreWholeTextFramesOfTheirJSON() throws {
        let messages: [ServerMessage] = [
            .pong,
            .ack(clientMessageID: "c\"1\\\u{2028}\n", channel: "g1", seq: 42, messageID: "m1"),
            .readOK(channel: "g1", lastReadSeq: 7),
            .hello(user: "alice", session: "default", connection: "w1", heartbeatMilliseconds: 30_000),
            .error(code: .badRequest, message: String(repeating: "x", count: 200), clientMessageID: String(repeating: "é", count: 100)),
            .resumed(truncated: Dictionary(uniqueKeysWithValues: (0..<4_000).map { ("channel-\($0)", Int64($0)) })),
        ]
        for message in messages {
            var frame = message.frame
            let payload = message.json
            let length = payload.utf8.count
            let first = frame.readInteger(as: UInt8.self)
            let readMarker = frame.readInteger(as: UInt8.self)
            let marker = try #require(readMarker)
            #expect(first == 0x81, "final text frame")
            var declared: Int? = Int(marker)
            if marker == 126 { declared = frame.readInteger(as: UInt16.self).map(Int.init) }
            if marker == 127 { declared = frame.readInteger(as: UInt64.self).map(Int.init) }
            #expect(declared == length)
            #expect(marker == (length <= 125 ? UInt8(length) : length <= 0xFFFF ? 126 : 127), "the shortest length form")
            let rest = frame.readString(length: frame.readableBytes)
            #expect(rest == payload)
        }
        #expect(
            ServerMessage.ack(clientMessageID: "c\"1\\\u{2028}\n", channel: "g1", seq: 42, messageID: "m1").json
                == #"{"type":"ack","client_msg_id":"c\"1\\\u2028\n","channel_id":"g1","seq":42,"message_id":"m1"}"#
        )
        #expect(messages[5].json.utf8.count > 0xFFFF, "a frame with a 64-bit length")
    }
}

extension LiveConnectionStateMachineTests {
    /// A live event met while a read was on its way may have been appended after the read was
    /// served: the stream reads again rather than wait for the next event.
    @Test func aLiveEventMetDuringAnEmptyReadIsReadAgain() {
        var machine = self.openMachine(["c": 2])
        let read = Machine.LogRead(channel: "c", after: 2, limit: 3)
        #expect(machine.mayHaveMissed(channel: "c") == read)
        #expect(machine.liveEvent(channel: "c", seq: 3, frame: frame("c", 3), membership: nil) == .none)
        let empty = machine.logPage(read, events: [])
        #expect(empty.reads == [read], "seq 3 exists: read again")
        let page = machine.logPage(read, events: logEvents("c", 3...3))
        #expect(page.frames == [frame("c", 3)])
        #expect(page.reads.isEmpty)
    }

    @Test func aSeqTheLogNeverGetsIsGivenUpOn() {
        var machine = self.openMachine(["c": 2])
        _ = machine.mayHaveMissed(channel: "c")
        _ = machine.liveEvent(channel: "c", seq: 9, frame: frame("c", 9), membership: nil)
        var read = Machine.LogRead(channel: "c", after: 2, limit: 3)
        var reads = 0
        while reads < 10 {
            let outcome = machine.logPage(read, events: [])
            guard let next = outcome.reads.first else { break }
            read = next
            reads += 1
        }
        #expect(reads == Machine.maxEmptyReads, "bounded")
        #expect(machine.liveEvent(channel: "c", seq: 3, frame: frame("c", 3), membership: nil) == .write(frame("c", 3)), "live again")
    }

    /// A join whose `member_joined` the log does not show yet (with `--redis-wait`, replicas do
    /// not hold it yet: the log is read no further) keeps its stream, out of the channel, after
    /// the bounded reads: the event, once pushed live, reads again and starts the user there.
    @Test func aJoinTheLogDoesNotShowYetWaitsForTheChannelsNextEvent() {
        var machine = self.openMachine([:])
        var read = Machine.LogRead(channel: "c", after: 11, limit: 3)
        #expect(machine.joined(channel: "c", seq: 12).reads == [read])
        var reads = 0
        while reads < 10 {
            let outcome = machine.logPage(read, events: [])
            #expect(outcome.left.isEmpty)
            guard let next = outcome.reads.first else { break }
            read = next
            reads += 1
        }
        #expect(reads == Machine.maxEmptyReads, "bounded")
        #expect(machine.following == ["c"], "still waiting for its member_joined")
        #expect(machine.liveEvent(channel: "c", seq: 12, frame: frame("c", 12), membership: .joined(user: "me")) == .read(read))
        var events = logEvents("c", 12...12)
        events[0].membership = .joined(user: "me")
        #expect(machine.logPage(read, events: events).frames == [frame("c", 12)])
        #expect(machine.liveEvent(channel: "c", seq: 13, frame: frame("c", 13), membership: nil) == .write(frame("c", 13)))
    }

    /// A join's `member_joined` pushed live (once replicas hold it) while the last of the bounded
    /// reads for it is on its way, a read Redis served before the event was readable: the stream
    /// reads once more, rather than wait for the channel's next event, which may never come.
    @Test func aJoinPushedDuringTheLastEmptyReadIsReadAgain() throws {
        var machine = self.openMachine([:])
        var read = Machine.LogRead(channel: "c", after: 11, limit: 3)
        #expect(machine.joined(channel: "c", seq: 12).reads == [read])
        for _ in 0..<Machine.maxEmptyReads {
            read = try #require(machine.logPage(read, events: []).reads.first)
        }
        // The last read is in flight: the event arrives live, and waits for it.
        #expect(machine.liveEvent(channel: "c", seq: 12, frame: frame("c", 12), membership: .joined(user: "me")) == .none)
        let empty = machine.logPage(read, events: [])
        #expect(empty.reads == [read], "the event is in the log by now: read again")
        var events = logEvents("c", 12...12)
        events[0].membership = .joined(user: "me")
        #expect(machine.logPage(read, events: events).frames == [frame("c", 12)])
        #expect(machine.liveEvent(channel: "c", seq: 13, frame: frame("c", 13), membership: nil) == .write(frame("c", 13)))
    }

    /// A join whose seq turned out to be another event (a failover lost the join, and the seq
    /// went to the next event): the stream ends there, having written nothing.
    @Test func aJoinWhoseSeqIsAnotherEventEndsTheStream() {
        var machine = self.openMachine([:])
        let read = Machine.LogRead(channel: "c", after: 11, limit: 3)
        #expect(machine.joined(channel: "c", seq: 12).reads == [read])
        let outcome = machine.logPage(read, events: logEvents("c", 12...12))
        #expect(outcome.frames.isEmpty)
        #expect(outcome.left == ["c"])
        #expect(machine.following.isEmpty)
    }

    @Test func anEmptyReadToTheEndIsNotRepeated() {
        var machine = self.openMachine(["c": 2])
        let read = Machine.LogRead(channel: "c", after: 2, limit: 3)
        #expect(machine.mayHaveMissed(channel: "c") == read)
        #expect(machine.logPage(read, events: []).reads.isEmpty)
    }
}
