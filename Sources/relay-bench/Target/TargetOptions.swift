import ArgumentParser

/// The server a scenario runs against: the relay, or nchan (the peer), and where to find them.
enum TargetKind: String, ExpressibleByArgument, Sendable {
    case relay
    case nchan
}

/// Options every scenario shares.
struct TargetOptions: ParsableArguments {
    @Option(help: "What runs at --url: relay, or nchan (nginx with nchan, as scripts/nchan.sh sets it up).")
    var target: TargetKind = .relay

    @Option(help: "Base URL of the server (loopback).")
    var url = "http://127.0.0.1:8080"

    @Option(help: "The relay's JWT secret: tokens are signed here. Without it, they come from POST /auth/dev-token (--dev).")
    var jwtSecret: String?

    @Option(help: "Redis URL, for INFO commandstats (Redis commands per client).")
    var redis: String?

    @Option(help: "PIDs of the server processes (the relay; nginx's workers), comma-separated: their CPU is the server's.")
    var serverPids = ""

    @Option(help: "PID of redis-server: its CPU is added to the server's.")
    var redisPid = ""

    @Option(help: "Event loops (threads) of the load generator.")
    var threads = 1

    @Option(help: "Connections opened at once while connecting sockets.")
    var connectConcurrency = 200

    @Flag(help: "Also print the result as one JSON line (prefixed 'json ').")
    var json = false

    var processes: ServerProcesses {
        ServerProcesses(server: Self.pids(self.serverPids), redis: Self.pids(self.redisPid))
    }

    private static func pids(_ list: String) -> [Int32] {
        list.split(whereSeparator: { $0 == "," || $0 == " " }).compactMap { Int32($0) }
    }

    func validate() throws {
        guard self.threads >= 1, self.threads <= 64 else { throw ValidationError("--threads: 1 to 64") }
        guard Endpoint(url: self.url) != nil else { throw ValidationError("--url: expected http://HOST:PORT") }
    }
}

/// Host and port of an `http://host:port` URL.
struct Endpoint: Sendable {
    var host: String
    var port: Int

    init?(url: String) {
        guard url.hasPrefix("http://") else { return nil }
        let rest = url.dropFirst("http://".count).prefix { $0 != "/" }
        let parts = rest.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { return nil }
        self.host = String(parts[0])
        self.port = port
    }
}
