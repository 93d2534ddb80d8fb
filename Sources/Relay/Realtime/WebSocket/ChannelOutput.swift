import NIOCore

/// Writes whole, encoded frames straight to a WebSocket's channel, past every outbound handler
/// of its pipeline: after the upgrade no handler between the relay's own and the socket does
/// anything with what they write (``PipelineLayoutError`` pins the layout). A fan-out writes once
/// per socket per event, and the trip from context to context to the pipeline's head touched as
/// many objects as the channel's own write did.
struct ChannelOutput {
    private let core: any ChannelCore

    /// Call on the channel's event loop, as every method here.
    init(_ channel: any Channel) {
        self.core = channel._channelCore
    }

    func write(_ bytes: ByteBuffer) {
        self.core.write0(NIOAny(bytes), promise: nil)
    }

    /// Hands the socket everything written so far.
    func flush() {
        self.core.flush0()
    }

    func writeAndFlush(_ bytes: ByteBuffer) {
        self.core.write0(NIOAny(bytes), promise: nil)
        self.core.flush0()
    }
}
