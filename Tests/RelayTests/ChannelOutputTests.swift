import Glibc
import NIOCore
import NIOPosix
import TestSupport
import Testing

@testable import Relay

/// A WebSocket's frames go straight to the kernel while NIO holds none of the socket's bytes,
/// and to NIO, behind what it holds, otherwise (``ChannelOutput``): on real loopback sockets,
/// every byte arrives once and in order, and nothing is sent on a closed channel's descriptor,
/// whose number another socket may already have.
@Suite("Socket output past NIO")
struct ChannelOutputTests {
    /// A channel accepted on loopback, and the plain socket connected to it (never read until
    /// ``read(count:)``), with a small receive buffer so that the server's writes fill it.
    struct Connection: Sendable {
        var server: any Channel
        var channel: any Channel
        var client: Int32

        static func open(clientReceiveBuffer: Int32 = 4096) async throws -> Connection {
            let (accepted, continuation) = AsyncStream.makeStream(of: (any Channel).self)
            let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .childChannelOption(.socketOption(.so_sndbuf), value: 4096)
                .childChannelInitializer { channel in
                    continuation.yield(channel)
                    return channel.eventLoop.makeSucceededVoidFuture()
                }
                .bind(host: "127.0.0.1", port: 0).get()
            let port = try #require(server.localAddress?.port)
            let client = try await runOnOwnThread {
                let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                guard fd >= 0 else { throw TestFailure("socket(): errno \(errno)") }
                var size = clientReceiveBuffer
                setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
                var seconds = timeval(tv_sec: 10, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &seconds, socklen_t(MemoryLayout<timeval>.size))
                guard connectToLoopback(fd, port: port) == 0 else {
                    Glibc.close(fd)
                    throw TestFailure("connect(): errno \(errno)")
                }
                return fd
            }
            var iterator = accepted.makeAsyncIterator()
            guard let channel = await iterator.next() else { throw TestFailure("nothing accepted") }
            return Connection(server: server, channel: channel, client: client)
        }

        /// Reads `count` bytes (fewer if the connection ends or stays silent for 10 s).
        func read(count: Int) async throws -> [UInt8] {
            let fd = self.client
            return try await runOnOwnThread {
                var bytes: [UInt8] = []
                var chunk = [UInt8](repeating: 0, count: 65_536)
                while bytes.count < count {
                    let read = chunk.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, min($0.count, count - bytes.count), 0) }
                    guard read > 0 else { break }
                    bytes += chunk[0..<read]
                }
                return bytes
            }
        }

        func close() async {
            try? await self.channel.close()
            try? await self.server.close()
            Glibc.close(self.client)
        }

        /// Runs `body` on the channel's event loop, with the channel's output.
        func onLoop<T: Sendable>(
            _ output: NIOLoopBound<ChannelOutput>,
            _ body: @escaping @Sendable (ChannelOutput) throws -> T
        ) async throws -> T {
            try await self.channel.eventLoop.submit { try body(output.value) }.get()
        }

        func makeOutput() async throws -> NIOLoopBound<ChannelOutput> {
            let channel = self.channel
            return try await channel.eventLoop.submit { NIOLoopBound(ChannelOutput(channel), eventLoop: channel.eventLoop) }.get()
        }
    }

    static func bytes(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    @Test func framesGoStraightToTheKernelWhileNIOHoldsNothing() async throws {
        let connection = try await Connection.open()
        let output = try await connection.makeOutput()
        let sent = try await connection.onLoop(output) { output in
            for text in ["one ", "two ", "three"] { output.writeAndFlush(Self.bytes(text)) }
            return output.directSends
        }
        #expect(sent == 3)
        #expect(String(decoding: try await connection.read(count: 13), as: UTF8.self) == "one two three")
        await connection.close()
    }

    /// A frame the kernel took only in part leaves its rest with NIO; every frame after it goes
    /// through NIO too, until NIO holds nothing again: then the next is sent from here.
    @Test func whatTheKernelDidNotTakeGoesOutBeforeAnythingWrittenAfterIt() async throws {
        let connection = try await Connection.open()
        let output = try await connection.makeOutput()
        let large = (0..<2_000_000).map { UInt8(truncatingIfNeeded: $0 % 251) }
        let small = (0..<200).map { "<\($0)>" }
        let (held, sends) = try await connection.onLoop(output) { output in
            output.writeAndFlush(ByteBuffer(bytes: large))
            for text in small { output.writeAndFlush(Self.bytes(text)) }
            // A write and a flush of their own, behind the rest, as a page of the log goes.
            output.write(Self.bytes("[page]"))
            output.flush()
            return (output.heldByNIO, output.directSends)
        }
        #expect(held > 0, "the kernel took all of 2 MB at once: nothing was left for NIO")
        #expect(sends == 1, "frames were sent past the bytes NIO held")
        let expected = large + Array((small.joined() + "[page]").utf8)
        let read = try await connection.read(count: expected.count)
        #expect(read.count == expected.count)
        #expect(read == expected, "the bytes arrived out of order")

        // Drained: NIO holds nothing, and the next frame is sent from here again.
        var drained = false
        for _ in 0..<100 where !drained {
            drained = try await connection.onLoop(output) { $0.heldByNIO == 0 }
            if !drained { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(drained)
        let after = try await connection.onLoop(output) { output in
            output.writeAndFlush(Self.bytes("tail"))
            return output.directSends
        }
        #expect(after == 2)
        #expect(try await connection.read(count: 4) == Array("tail".utf8))
        await connection.close()
    }

    /// Once NIO closed the socket its descriptor's number is free for the next socket the
    /// process opens: the heartbeat, the first handler that writes to the output, tells it at
    /// once, and a frame written then is not sent from here (NIO drops it). So it does when the
    /// connection was closing already (its close frame sent, the heartbeat stopped).
    @Test(arguments: [false, true])
    func nothingIsSentOnceTheChannelIsClosed(closingFirst: Bool) async throws {
        let connection = try await Connection.open()
        let output = try await connection.makeOutput()
        let heartbeats = Heartbeats(interval: .seconds(3600))
        try await connection.onLoop(output) { output in
            let pipeline = connection.channel.pipeline.syncOperations
            try pipeline.addHandler(HeartbeatHandler(heartbeats: heartbeats, output: output))
            if closingFirst { pipeline.triggerUserOutboundEvent(WebSocketProtocolHandler.Closing(code: 1000), promise: nil) }
        }
        try await connection.channel.close()
        let sends = try await connection.onLoop(output) { output in
            output.writeAndFlush(Self.bytes("late"))
            return output.directSends
        }
        #expect(sends == 0)
        #expect(try await connection.read(count: 4).isEmpty, "the client got bytes after the close")
        await connection.close()
    }
}
