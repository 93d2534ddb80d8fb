import Foundation
import NIOPosix
import RedisClient

/// Total calls of every command Redis served so far (INFO commandstats).
func redisCommandCalls(url: String?) async throws -> Int? {
    guard let url else { return nil }
    let connection = try await RedisConnection.connect(
        configuration: try RedisConfiguration(url: url),
        eventLoop: MultiThreadedEventLoopGroup.singleton.any()
    )
    defer { connection.close() }
    guard let info = try await connection.execute(RedisCommand("INFO", key: nil, ["commandstats"])).string else { return nil }
    var calls = 0
    for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("cmdstat_") {
        guard let range = line.range(of: "calls=") else { continue }
        calls += Int(line[range.upperBound...].prefix { $0.isNumber }) ?? 0
    }
    return calls
}
