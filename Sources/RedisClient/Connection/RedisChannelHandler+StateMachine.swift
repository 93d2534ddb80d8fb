import DequeModule
import NIOCore

extension RedisChannelHandler {
    /// The protocol logic of one connection: a FIFO of requests awaiting replies.
    ///
    /// Replies come back in the order commands were written, so the head of the FIFO owns the
    /// next reply. A request whose caller went away (cancelled, timed out) keeps its place with
    /// no continuation, so that its reply is read and dropped rather than handed to the next
    /// caller. Generic over the continuation so that it is tested without sockets.
    struct StateMachine<Continuation> {
        struct Request {
            var id: UInt64
            var continuation: Continuation?
            var deadline: NIODeadline
        }

        enum State {
            case active(Deque<Request>)
            case closed(RedisError)
            /// Only while a method changes the FIFO: the state lets go of it, so that it is
            /// changed in place rather than copied (a pipeline of N commands would copy N² requests).
            case modifying
        }

        private(set) var state: State = .active([])

        enum SendAction {
            case write
            case fail(Continuation, RedisError)
        }

        /// A command that expects a reply is about to be written.
        mutating func send(id: UInt64, continuation: Continuation, deadline: NIODeadline) -> SendAction {
            switch self.state {
            case .active(var pending):
                self.state = .modifying
                pending.append(Request(id: id, continuation: continuation, deadline: deadline))
                self.state = .active(pending)
                return .write
            case .closed(let error):
                return .fail(continuation, error)
            case .modifying:
                preconditionFailure("invalid state")
            }
        }

        enum ReplyAction {
            case succeed(Continuation)
            case drop
            case closeConnection(RedisError)
        }

        /// A reply arrived for the head of the FIFO.
        mutating func receivedReply() -> ReplyAction {
            switch self.state {
            case .active(var pending):
                self.state = .modifying
                let request = pending.popFirst()
                self.state = .active(pending)
                guard let request else {
                    return .closeConnection(RedisError(.protocolViolation, "a reply without a request"))
                }
                guard let continuation = request.continuation else { return .drop }
                return .succeed(continuation)
            case .closed:
                return .drop
            case .modifying:
                preconditionFailure("invalid state")
            }
        }

        enum CancelAction {
            case fail(Continuation)
            case none
        }

        /// The caller of request `id` went away. Its reply, when it comes, is dropped.
        mutating func cancel(id: UInt64) -> CancelAction {
            guard case .active(var pending) = self.state,
                let index = pending.firstIndex(where: { $0.id == id }),
                let continuation = pending[index].continuation
            else { return .none }
            self.state = .modifying
            pending[index].continuation = nil
            self.state = .active(pending)
            return .fail(continuation)
        }

        enum TimerAction {
            /// Nothing is pending: no timer is needed.
            case none
            /// Check again at this deadline.
            case schedule(NIODeadline)
            /// The head timed out: close the connection, failing every pending request.
            case timeout([(Continuation, RedisError)])
        }

        /// The timer fired (or a timer may be needed). Only the head can be late first: it was
        /// sent first, and every command shares the connection's timeout.
        mutating func checkDeadline(now: NIODeadline) -> TimerAction {
            guard case .active(let pending) = self.state, let head = pending.first else { return .none }
            guard head.deadline <= now else { return .schedule(head.deadline) }
            let timeout = RedisError(.timeout, "no reply from Redis within the command timeout")
            let closed = RedisError(.connectionClosed, "connection closed after a command timed out")
            var failures = [(Continuation, RedisError)]()
            for (index, request) in pending.enumerated() {
                guard let continuation = request.continuation else { continue }
                failures.append((continuation, index == 0 ? timeout : closed))
            }
            self.state = .closed(closed)
            return .timeout(failures)
        }

        /// The connection is gone: every pending request fails with `error`.
        mutating func close(error: RedisError) -> [Continuation] {
            switch self.state {
            case .active(let pending):
                self.state = .closed(error)
                return pending.compactMap(\.continuation)
            case .closed:
                return []
            case .modifying:
                preconditionFailure("invalid state")
            }
        }

        var pendingCount: Int {
            if case .active(let pending) = self.state { return pending.count }
            return 0
        }
    }
}
