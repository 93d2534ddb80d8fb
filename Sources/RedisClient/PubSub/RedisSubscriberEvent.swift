import NIOCore
import Synchronization

/// What a ``RedisSubscriber`` delivers.
public enum RedisSubscriberEvent: Sendable {
    /// A message published to a subscribed topic.
    case message(topic: String, payload: ByteBuffer)
    /// The subscriber's connection was (re)established and these topics are subscribed again.
    /// Messages published to them while it was down are lost: fetch what was missed elsewhere.
    case resubscribed(topics: [String])
}

/// Where a subscriber's events go: its stream, or a function given before it runs.
final class RedisSubscriberSink: Sendable {
    let events: AsyncStream<RedisSubscriberEvent>
    private let continuation: AsyncStream<RedisSubscriberEvent>.Continuation
    /// Boxed: a function kept in a `Mutex` directly is re-abstracted on every access, and the
    /// thunks pile up.
    private let handler = Mutex<Handler?>(nil)

    private final class Handler: Sendable {
        let call: @Sendable (RedisSubscriberEvent) -> Void
        init(_ call: @escaping @Sendable (RedisSubscriberEvent) -> Void) { self.call = call }
    }

    init() {
        (self.events, self.continuation) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    func deliver(to handler: @escaping @Sendable (RedisSubscriberEvent) -> Void) {
        let boxed = Handler(handler)
        self.handler.withLock { $0 = boxed }
    }

    func yield(_ event: RedisSubscriberEvent) {
        if let handler = self.handler.withLock({ $0 }) {
            handler.call(event)
        } else {
            self.continuation.yield(event)
        }
    }

    func finish() {
        self.continuation.finish()
    }
}
