import NIOCore

/// What a ``RedisSubscriber`` delivers.
public enum RedisSubscriberEvent: Sendable {
    /// A message published to a subscribed topic.
    case message(topic: String, payload: ByteBuffer)
    /// The subscriber's connection was (re)established and these topics are subscribed again.
    /// Messages published to them while it was down are lost: fetch what was missed elsewhere.
    case resubscribed(topics: [String])
}
