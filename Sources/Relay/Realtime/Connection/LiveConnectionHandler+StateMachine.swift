import DequeModule
import NIOCore

extension LiveConnectionHandler {
    /// Every ordering rule of one live connection, without I/O: which event goes out when, which
    /// range of which channel's log to read, when the connection follows a channel and when it
    /// stops, which client frame is served next.
    ///
    /// Per channel the connection has delivered every seq up to `delivered`, in order. A live
    /// event that continues it is written at once (the fast path), unless pages of the log fill
    /// the socket (then it waits in the log for the next page). Anything else (a gap, a
    /// resume, a channel joined, a subscription that may have missed something) reads the log
    /// from `delivered` on, one page at a time, while the socket can take more; live events that
    /// arrive meanwhile are not kept, only their seq, so that the reading goes on until it has
    /// passed them: the log has every event before it is published.
    ///
    /// Membership is exact at a seq: the stream stops right after its user's own `member_left`,
    /// and a channel joined starts at the user's own `member_joined`.
    struct StateMachine {
        struct Stream: Equatable {
            /// The last seq written (or, before any, the seq the stream starts after).
            var delivered: Int64
            /// The highest seq known to exist: reading goes on until it is delivered.
            var target: Int64
            /// The `after` of the log read in flight, if one is.
            var reading: Int64?
            /// A read is due but waits for the socket to drain.
            var readDue = false
            /// Reads in a row that found nothing although `target` was not reached.
            var emptyReads = 0
            /// Whether the user is a member at `delivered`. Out of the channel (after its own
            /// `member_left`, or before the `member_joined` a join starts from), the stream reads
            /// the log on without writing, up to `target`, for the user's own `member_joined`:
            /// written from there on. It ends if it reaches `target` still out.
            var isMember = true
            /// Events per read of the log: the machine's page size, or fewer once a page of large
            /// events filled the page's bytes (doubling back up after a page that did not).
            var pageLimit: Int?

            /// Whether the event `seq` goes out at once: it is the next one, the user is in, and no
            /// read of the log is under way or due.
            func isNext(_ seq: Int64) -> Bool {
                self.isMember && self.reading == nil && !self.readDue && seq == self.delivered + 1
            }
        }

        /// A range of a channel's log to read, and to hand back with ``logPage(_:after:events:)``.
        struct LogRead: Equatable {
            var channel: String
            var after: Int64
            var limit: Int
        }

        /// An event read from the log, ready to write.
        struct LogEvent {
            var seq: Int64
            var frame: ByteBuffer
            var membership: EventMembership?
        }

        enum Phase: Equatable {
            /// Reading the user's channels and their log ends; nothing is written yet.
            case starting
            case open
            case closed
        }

        /// What a live event leads to.
        enum EventAction: Equatable {
            case none
            case write(ByteBuffer)
            /// Write, then stop following the channel (the user's own `member_left`).
            case writeAndLeave(ByteBuffer, channel: String)
            /// Write (the user's own `member_left`), then read on: the user was added again since.
            case writeAndRead(ByteBuffer, LogRead)
            case read(LogRead)
            /// Close as a slow consumer (4008): live events waited in the log for longer than
            /// ``liveDeferral`` while the socket took nothing.
            case tooSlow
        }

        /// What a page of the log, or a change of plan, leads to; in this order: write the frames,
        /// stop following `left`, start `reads`, write `answer`, and close if `fellBehind`.
        struct Outcome {
            var frames: [ByteBuffer] = []
            var left: [String] = []
            var reads: [LogRead] = []
            /// An answer that finished the client frame being served (`resumed`).
            var answer: ServerMessage?
            /// A channel's log no longer holds events this connection never got (retention trimmed
            /// them): it cannot go on without a gap, and is closed as a slow consumer (4008). The
            /// client resumes from its cursor and is told where the log now begins (`truncated`).
            var fellBehind = false

            var isEmpty: Bool {
                self.frames.isEmpty && self.left.isEmpty && self.reads.isEmpty && self.answer == nil && !self.fellBehind
            }

            mutating func merge(_ other: Outcome) {
                self.frames += other.frames
                self.left += other.left
                self.reads += other.reads
                if let answer = other.answer { self.answer = answer }
                self.fellBehind = self.fellBehind || other.fellBehind
            }
        }

        /// A resume under way: the channels still replaying, and those whose cursor was below the log.
        struct Resume {
            var waiting: Set<String>
            var truncated: [String: Int64]
        }

        let user: String
        let pageSize: Int
        /// Bytes of frames one page of the log writes at most (and at least one event): a page is
        /// read only while the socket takes more, and must fit in the connection's budget with
        /// room to spare, however large its events are.
        let pageBytes: Int
        private(set) var phase = Phase.starting
        private(set) var streams: [String: Stream] = [:]
        /// Whether the socket takes more now (below its high-water mark).
        private(set) var isWritable = true
        /// When a page of the log was last written. While the socket is full within
        /// ``liveDeferral`` of it, live events wait in the log rather than in the socket's
        /// buffer, and come with the next page once it drains: a replay that fills the socket
        /// (and the kernel's buffers behind it) as fast as the client reads leaves no room for
        /// what arrives live meanwhile, and the client, who reads, would be closed as too slow
        /// for what the replay itself queued.
        private var lastPage: NIODeadline?
        /// Since when live events wait in the log, the socket full all along.
        private var deferringSince: NIODeadline?
        /// How long live events may wait so: long enough for a client that reads slowly to drain
        /// the kernel's buffers (the kernel signals room on a socket only once a third of its
        /// buffer, up to 4 MB, has drained), short enough that a client that stopped reading is
        /// closed as too slow (4008) by the next live event, before its heartbeat would.
        let liveDeferral: TimeAmount
        /// Highest seq seen live per channel before the start, and channels joined meanwhile.
        private var seenWhileStarting: [String: Int64] = [:]
        private var joinedWhileStarting: [String: Int64] = [:]
        /// Per channel no longer followed, the seq its stream had read up to when it ended: a join
        /// announced at or below it is old news (the log showed it, or showed it undone).
        private var ended: [String: Int64] = [:]
        private var resume: Resume?

        /// Client messages not yet served, and whether one is being served.
        private var frames: Deque<WebSocketInboundMessage> = []
        private var queuedFrameBytes = 0
        private var isServingFrame = false

        init(user: String, pageSize: Int = 200, pageBytes: Int = 512 * 1024, liveDeferral: TimeAmount = .seconds(10)) {
            self.user = user
            self.pageSize = pageSize
            self.pageBytes = pageBytes
            self.liveDeferral = liveDeferral
        }

        var following: Set<String> { Set(self.streams.keys) }

        // MARK: Start and end

        /// The user's channels and each one's last seq (read after subscribing): each stream starts
        /// there. `nil`: they could not be read (the caller reads them again later).
        mutating func started(anchors: [String: Int64]?) -> Outcome {
            guard self.phase == .starting else { return Outcome() }
            self.phase = .open
            var outcome = Outcome()
            for (channel, last) in anchors ?? [:] {
                var stream = Stream(delivered: last, target: last)
                if let seen = self.seenWhileStarting[channel], seen > last {
                    stream.target = seen
                }
                self.streams[channel] = stream
                if stream.target > stream.delivered, let read = self.startRead(channel) { outcome.reads.append(read) }
            }
            self.seenWhileStarting = [:]
            for (channel, seq) in self.joinedWhileStarting.sorted(by: { $0.key < $1.key }) {
                outcome.merge(self.join(channel: channel, startingAfter: seq - 1, knownUpTo: seq, atJoin: true))
            }
            self.joinedWhileStarting = [:]
            return outcome
        }

        /// The connection is closing or closed: nothing more is written or read.
        mutating func close() {
            self.phase = .closed
            self.frames.removeAll()
            self.queuedFrameBytes = 0
            self.resume = nil
        }

        // MARK: Live events

        /// A live event of `channel`, from the hub; `now` is asked only while the socket is full.
        mutating func liveEvent(
            channel: String,
            seq: Int64,
            frame: ByteBuffer,
            membership: EventMembership?,
            now: () -> NIODeadline = NIODeadline.now
        ) -> EventAction {
            switch self.phase {
            case .starting:
                self.seenWhileStarting[channel] = max(seq, self.seenWhileStarting[channel] ?? 0)
                return .none
            case .closed:
                return .none
            case .open:
                break
            }
            // One lookup, then changes in place: this runs once per socket per event.
            guard let index = self.streams.index(forKey: channel) else { return .none }
            let stream = self.streams.values[index]
            guard seq > stream.delivered else { return .none }
            if !self.isWritable {
                switch self.deferral(now) {
                case .none:
                    break
                case .wait:
                    // Its seq only: the socket being full, the read is marked due, and starts
                    // once the socket drains.
                    self.streams.values[index].target = max(stream.target, seq)
                    _ = self.startRead(channel)
                    return .none
                case .tooSlow:
                    return .tooSlow
                }
            }
            if stream.isNext(seq) {
                if membership == .left(user: self.user) {
                    self.streams.values[index].delivered = seq
                    guard stream.target > seq else {
                        self.streams.remove(at: index)
                        self.ended[channel] = seq
                        return .writeAndLeave(frame, channel: channel)
                    }
                    // Added again since (a notice said so): the log shows from where.
                    self.streams.values[index].isMember = false
                    guard let read = self.startRead(channel) else { return .write(frame) }
                    return .writeAndRead(frame, read)
                }
                self.streams.values[index].delivered = seq
                self.streams.values[index].target = max(stream.target, seq)
                return .write(frame)
            }
            self.streams.values[index].target = max(stream.target, seq)
            return self.startRead(channel).map { .read($0) } ?? .none
        }

        /// This connection's own message was just logged at `seq` of `channel`. If it continues
        /// the stream, it goes out now, with the ack, and its live copy is dropped as already
        /// delivered when it arrives: one write instead of two. Otherwise (a gap, a read under way,
        /// a channel not followed) nothing changes, and the live copy brings it as any event.
        mutating func ownEvent(channel: String, seq: Int64, now: () -> NIODeadline = NIODeadline.now) -> Bool {
            guard self.phase == .open, let index = self.streams.index(forKey: channel) else { return false }
            let stream = self.streams.values[index]
            guard stream.isNext(seq), self.isWritable || self.deferral(now) == .none else { return false }
            self.streams.values[index].delivered = seq
            self.streams.values[index].target = max(stream.target, seq)
            return true
        }

        enum Deferral: Equatable {
            case none
            case wait
            /// The socket took nothing for ``liveDeferral`` while live events waited.
            case tooSlow
        }

        /// Whether a live event, the socket being full, waits in the log: it does while a page
        /// was written lately, and until the socket drains, for ``liveDeferral`` at most.
        private mutating func deferral(_ now: () -> NIODeadline) -> Deferral {
            if let since = self.deferringSince {
                return now() - since > self.liveDeferral ? .tooSlow : .wait
            }
            guard let lastPage = self.lastPage else { return .none }
            let time = now()
            guard time - lastPage < self.liveDeferral else { return .none }
            self.deferringSince = time
            return .wait
        }

        /// Events of `channel` may have been published while they could not arrive: read the log
        /// to its end.
        mutating func mayHaveMissed(channel: String) -> LogRead? {
            guard self.phase == .open, self.streams[channel] != nil else { return nil }
            return self.startRead(channel, toEnd: true)
        }

        // MARK: The log

        /// A page of `channel`'s log after `after` (ascending; at most the read's limit), with
        /// `buffered` bytes still waiting to go out on the socket: the page writes up to
        /// ``pageBytes`` less those, and at least one event while the socket takes more.
        mutating func logPage(_ read: LogRead, events: [LogEvent], buffered: Int = 0, now: NIODeadline = .now()) -> Outcome {
            guard self.phase == .open, var stream = self.streams[read.channel], stream.reading == read.after else {
                return Outcome()
            }
            stream.reading = nil
            guard read.after == stream.delivered else {
                // A resume moved the stream while this page was on its way: read again from there.
                self.streams[read.channel] = stream
                var outcome = Outcome()
                if let next = self.startRead(read.channel, toEnd: true) { outcome.reads.append(next) }
                return outcome
            }
            var outcome = Outcome()
            let room = self.pageBytes - buffered
            var bytes = 0
            var taken = 0
            var full = false
            for event in events where event.seq > stream.delivered {
                // The page's bytes are spent (other pages may have spent them): the rest is read
                // again once the socket has taken these.
                if bytes >= room, taken > 0 || !self.isWritable {
                    full = true
                    break
                }
                // A seq above the next one means retention trimmed the ones between (the log has
                // no other gap): what it no longer holds cannot be delivered, and skipping it
                // would break the connection's promise of no gap.
                guard event.seq == stream.delivered + 1 else {
                    self.streams[read.channel] = stream
                    outcome.fellBehind = true
                    return outcome
                }
                stream.delivered = event.seq
                taken += 1
                // Membership exact at a seq: written from the user's own member_joined up to and
                // including its own member_left, and nothing between a member_left and the next.
                if stream.isMember {
                    outcome.frames.append(event.frame)
                    bytes += event.frame.readableBytes
                    if event.membership == .left(user: self.user) { stream.isMember = false }
                } else if event.membership == .joined(user: self.user) {
                    stream.isMember = true
                    outcome.frames.append(event.frame)
                    bytes += event.frame.readableBytes
                }
            }
            if !outcome.frames.isEmpty { self.lastPage = now }
            if full {
                if taken > 0 { stream.pageLimit = taken }
            } else if events.count >= read.limit, let limit = stream.pageLimit {
                stream.pageLimit = limit * 2 >= self.pageSize ? nil : limit * 2
            }
            stream.target = max(stream.target, stream.delivered)
            // A live event met during the read may have been appended after the read was served:
            // read again. A seq the log never gets (a malformed publish) is given up on after a few.
            stream.emptyReads = events.isEmpty ? stream.emptyReads + 1 : 0
            let behind = stream.target > stream.delivered && stream.emptyReads <= Self.maxEmptyReads
            let more = full || events.count >= read.limit || behind
            if !stream.isMember && !more && stream.delivered >= stream.target {
                // Out of the channel, and the log read as far as it is known to go: stop following.
                self.streams[read.channel] = nil
                self.ended[read.channel] = stream.delivered
                outcome.left.append(read.channel)
                outcome.merge(self.replayed(read.channel))
                return outcome
            }
            self.streams[read.channel] = stream
            if more {
                if let next = self.startRead(read.channel, toEnd: full || events.count >= read.limit) { outcome.reads.append(next) }
            } else {
                stream.emptyReads = 0
                // Caught up with the log's end as of this read. A stream still waiting for its
                // user's own member_joined, which the log does not show yet (with --redis-wait,
                // before replicas hold it), keeps waiting for it: the channel's next event reads
                // again.
                if stream.isMember { stream.target = stream.delivered }
                self.streams[read.channel] = stream
                outcome.merge(self.replayed(read.channel))
            }
            return outcome
        }

        /// A log read failed (Redis unreachable): the stream stays where it is, and the next live
        /// event or `mayHaveMissed` reads again. A resume waiting for it is answered all the same.
        mutating func logReadFailed(_ read: LogRead) -> Outcome {
            guard self.phase == .open, var stream = self.streams[read.channel], stream.reading == read.after else {
                return Outcome()
            }
            stream.reading = nil
            self.streams[read.channel] = stream
            return self.replayed(read.channel)
        }

        /// Starts a read of `channel` from its delivered seq, or marks it due while the socket is
        /// full; `nil` when one is in flight already (its page leads to the next) or it is due.
        private mutating func startRead(_ channel: String, toEnd: Bool = false) -> LogRead? {
            guard var stream = self.streams[channel] else { return nil }
            guard stream.reading == nil else {
                // The read in flight may have been served before what this one is for: one more
                // read after it, even if it comes back empty after others that did (the event
                // that asks, say a join's `member_joined` pushed once replicas hold it, is in the
                // log by now, and nothing may ask again).
                if toEnd { stream.target = max(stream.target, stream.delivered + 1) }
                stream.emptyReads = 0
                self.streams[channel] = stream
                return nil
            }
            guard self.isWritable else {
                stream.readDue = true
                self.streams[channel] = stream
                return nil
            }
            stream.readDue = false
            stream.reading = stream.delivered
            self.streams[channel] = stream
            return LogRead(channel: channel, after: stream.delivered, limit: stream.pageLimit ?? self.pageSize)
        }

        // MARK: Writability

        /// The socket went above its high-water mark (false) or back below the low one (true).
        mutating func writabilityChanged(_ writable: Bool) -> Outcome {
            self.isWritable = writable
            guard writable, self.phase == .open else { return Outcome() }
            self.deferringSince = nil
            var outcome = Outcome()
            for channel in self.streams.keys.sorted() where self.streams[channel]?.readDue == true {
                if let read = self.startRead(channel) { outcome.reads.append(read) }
            }
            return outcome
        }

        // MARK: Channels joined and left

        /// The user was added to `channel` by its event `seq`: follow it from there, unless it is
        /// followed already (then the event arrives in order on its own).
        mutating func joined(channel: String, seq: Int64) -> Outcome {
            switch self.phase {
            case .starting:
                self.joinedWhileStarting[channel] = seq
                return Outcome()
            case .closed:
                return Outcome()
            case .open:
                if var stream = self.streams[channel] {
                    // Still followed, its member_left not reached yet: the user was removed and
                    // added again. The stream reads on to here; the log shows the way back in.
                    stream.target = max(stream.target, seq)
                    self.streams[channel] = stream
                    var outcome = Outcome()
                    if stream.delivered < seq, let read = self.startRead(channel, toEnd: true) { outcome.reads.append(read) }
                    return outcome
                }
                return self.join(channel: channel, startingAfter: seq - 1, knownUpTo: seq, atJoin: true)
            }
        }

        /// Channels found on a read of the user's channel set, each with the seq to start after:
        /// the one before the user's own `member_joined` (`atJoin`), or the log's end. Channels
        /// already followed stay as they are: leaving is the stream's own `member_left`.
        mutating func found(channels starts: [String: Int64], atJoin: Bool = true) -> Outcome {
            guard self.phase == .open else { return Outcome() }
            var outcome = Outcome()
            for (channel, start) in starts.sorted(by: { $0.key < $1.key }) {
                let target = atJoin ? start + 1 : start
                outcome.merge(self.join(channel: channel, startingAfter: start, knownUpTo: target, atJoin: atJoin))
            }
            return outcome
        }

        /// The channels newly followed by ``joined(channel:seq:)``, ``found(channels:)`` or a resume,
        /// are in `outcome.reads`; the caller subscribes to those it does not follow yet.
        ///
        /// At a join the stream starts out of the channel and is written from the user's own
        /// `member_joined` on. It starts where an earlier stream of the channel ended, if that is
        /// before (a window the user was in meanwhile comes first, in order), and not at all for
        /// a join at or below it (old news: the log was read past it).
        private mutating func join(channel: String, startingAfter start: Int64, knownUpTo target: Int64, atJoin: Bool) -> Outcome {
            guard self.streams[channel] == nil else { return Outcome() }
            var stream = Stream(delivered: max(0, start), target: max(0, target))
            if atJoin {
                if let ended = self.ended[channel] {
                    guard ended < target else { return Outcome() }
                    stream.delivered = min(stream.delivered, ended)
                }
                stream.isMember = false
            }
            self.streams[channel] = stream
            var outcome = Outcome()
            if let read = self.startRead(channel, toEnd: true) { outcome.reads.append(read) }
            return outcome
        }

        // MARK: Resume

        /// What Redis said of one channel named in a resume.
        enum ResumeLookup: Equatable {
            /// No such channel, or a DM the user is not in (which must not be told from none).
            case notFound
            /// A group the user is not a member of.
            case forbidden
            /// A member, with its membership changes in the channel when they are recorded.
            case member(lastSeq: Int64, firstSeq: Int64, membership: MembershipRecord? = nil)
            /// Redis could not be asked (down, or the channel's shard is).
            case unavailable
        }

        /// The answer to a resume, once Redis was asked about each channel: errors for the
        /// channels the user is not in or Redis could not be asked about (a channel missing from
        /// `lookups` is one), then replays; `resumed` once every replay reached the log's end (at
        /// once if there is none). A channel answered `unavailable` goes on as it was: the client
        /// resumes it again.
        mutating func resumeLookedUp(
            cursors: [(channel: String, cursor: Int64)],
            lookups: [String: ResumeLookup]
        ) -> (
            errors: [ServerMessage], outcome: Outcome
        ) {
            guard self.phase == .open else { return ([], Outcome()) }
            var errors: [ServerMessage] = []
            var outcome = Outcome()
            var resume = Resume(waiting: [], truncated: [:])
            for (channel, cursor) in cursors {
                switch lookups[channel] ?? .unavailable {
                case .unavailable:
                    errors.append(.error(code: .unavailable, message: "Redis is unavailable: resume this channel again", channel: channel))
                case .notFound:
                    errors.append(.error(code: .notFound, message: "no such channel", channel: channel))
                case .forbidden:
                    errors.append(.error(code: .forbidden, message: "not a member of this channel", channel: channel))
                case .member(let last, let first, let membership):
                    // A cursor past the log's end (a client that knew an earlier channel of that
                    // id) would hold back every live event up to it: resume from the end instead.
                    var start = min(cursor, last)
                    if start < first - 1 {
                        resume.truncated[channel] = first
                        start = first - 1
                    }
                    var stream = self.streams[channel] ?? Stream(delivered: start, target: last)
                    stream.delivered = start
                    stream.target = max(stream.target, last)
                    // Membership exact at a seq, in a replay too: from a cursor the user was out
                    // at (after its own member_left), nothing is written before its next
                    // member_joined, even should retention have trimmed that member_left.
                    stream.isMember = membership?.isMember(after: start) ?? true
                    self.streams[channel] = stream
                    resume.waiting.insert(channel)
                    if let read = self.startRead(channel, toEnd: true) { outcome.reads.append(read) }
                }
            }
            self.resume = resume
            if resume.waiting.isEmpty {
                outcome.merge(self.finishResume())
            }
            return (errors, outcome)
        }

        /// `channel` reached the log's end (or stopped): a resume waiting for it may be done.
        private mutating func replayed(_ channel: String) -> Outcome {
            guard self.resume?.waiting.remove(channel) != nil, self.resume?.waiting.isEmpty == true else { return Outcome() }
            return self.finishResume()
        }

        private mutating func finishResume() -> Outcome {
            guard let resume = self.resume else { return Outcome() }
            self.resume = nil
            var outcome = Outcome()
            outcome.answer = .resumed(truncated: resume.truncated)
            return outcome
        }

        // MARK: Client frames

        /// A client message arrived; false if the messages queued before it hold `maxBytes` already
        /// (too much unanswered).
        mutating func frameReceived(_ message: WebSocketInboundMessage, maxBytes: Int) -> Bool {
            guard self.phase != .closed else { return true }
            // Taken while the frames before it fit: one frame of any size the decoder passed
            // (up to `--max-body-bytes`, which may exceed a small budget) is always served.
            guard self.queuedFrameBytes < maxBytes else { return false }
            let cost = Self.cost(message)
            self.queuedFrameBytes += cost
            self.frames.append(message)
            return true
        }

        private static func cost(_ message: WebSocketInboundMessage) -> Int {
            switch message {
            case .text(let bytes), .binary(let bytes): bytes.readableBytes + Self.frameOverhead
            }
        }

        /// The next client message to serve: one at a time, in order, only once the connection
        /// has started and while the socket takes more (answers wait on the client reading).
        mutating func nextFrame() -> WebSocketInboundMessage? {
            guard self.phase == .open, !self.isServingFrame, self.isWritable, let message = self.frames.popFirst() else { return nil }
            self.queuedFrameBytes -= Self.cost(message)
            self.isServingFrame = true
            return message
        }

        /// The client message being served is answered.
        mutating func frameServed() {
            self.isServingFrame = false
        }

        /// Whether a client message is being served or waits to be.
        var hasFramesToAnswer: Bool {
            self.isServingFrame || !self.frames.isEmpty
        }

        /// Whether to read more of the client's frames now: not while the answers to those
        /// already read wait for the client to read, nor while many wait to be served.
        var wantsInput: Bool {
            self.phase != .closed && self.isWritable && self.frames.count < Self.maxQueuedFrames
        }

        /// Empty reads in a row after which a stream stops chasing a seq the log does not have.
        static let maxEmptyReads = 3

        /// Counted per queued client message besides its bytes.
        static let frameOverhead = 64
        /// Client messages read ahead of the one being served.
        static let maxQueuedFrames = 16
    }
}
