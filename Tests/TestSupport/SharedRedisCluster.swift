/// One Redis Cluster (3 primaries, 3 replicas) shared by every test of the process that
/// needs one and does not kill or pause its nodes; started on first use.
///
/// Tests share it as they share the suite's Redis: with keys of their own. Its servers live
/// under `REDIS_TEST_DIR` when `make test` runs, so they are stopped with the suite's server.
public enum SharedRedisCluster {
    private static let started = Task { try await RedisClusterProcess() }

    public static func get() async throws -> RedisClusterProcess {
        try await self.started.value
    }
}
