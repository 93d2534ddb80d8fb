import HTTPTypes
import Hummingbird
import RedisClient

/// An error as the API reports it: a status and `{"error": {"code", "message"}}`.
struct APIError: Error, Sendable {
    struct Code: Sendable, Hashable {
        let name: String
        let status: HTTPResponse.Status

        static let badRequest = Code(name: "bad_request", status: .badRequest)
        static let unauthorized = Code(name: "unauthorized", status: .unauthorized)
        static let forbidden = Code(name: "forbidden", status: .forbidden)
        static let notFound = Code(name: "not_found", status: .notFound)
        static let conflict = Code(name: "conflict", status: .conflict)
        static let tooLarge = Code(name: "too_large", status: .contentTooLarge)
        static let rateLimited = Code(name: "rate_limited", status: .tooManyRequests)
        static let unavailable = Code(name: "unavailable", status: .serviceUnavailable)
        static let `internal` = Code(name: "internal", status: .internalServerError)
    }

    var code: Code
    var message: String
    /// Seconds a refused caller should wait (`Retry-After`), for `rate_limited`.
    var retryAfter: Int?

    init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    static func badRequest(_ message: String) -> APIError { APIError(.badRequest, message) }

    /// The body of the error response: `{"error": {"code", "message"}}`.
    struct Body: Encodable {
        struct Detail: Encodable {
            var code: String
            var message: String
        }
        var error: Detail
    }

    var body: Body { Body(error: Body.Detail(code: self.code.name, message: self.message)) }

    /// ``body`` as JSON text, for the answers written below the router (a refused upgrade).
    var json: String {
        "{\"error\":{\"code\":\(JSONText.quoted(self.code.name)),\"message\":\(JSONText.quoted(self.message))}}"
    }
}

extension APIError {
    /// Maps any error a route can throw to what the API says about it.
    init(from error: any Error) {
        switch error {
        case let error as APIError:
            self = error
        case let error as ChatError:
            self.init(chat: error)
        case let error as RedisError:
            self.init(redis: error)
        case let error as any HTTPResponseError:
            switch error.status {
            case .notFound: self.init(.notFound, "not found")
            case .contentTooLarge: self.init(.tooLarge, "request body too large")
            case .methodNotAllowed: self.init(.notFound, "no such route for this method")
            case .unauthorized: self.init(.unauthorized, "unauthorized")
            case let status where status.code >= 400 && status.code < 500: self.init(.badRequest, status.reasonPhrase)
            default: self.init(.internal, "internal error")
            }
        case is DecodingError:
            self.init(.badRequest, "malformed JSON body")
        default:
            self.init(.internal, "internal error")
        }
    }

    /// The domain's error, as the API says it: the one place that gives each code its status.
    init(chat error: ChatError) {
        let code: Code =
            switch error.code {
            case .notFound: .notFound
            case .forbidden: .forbidden
            case .conflict: .conflict
            case .tooLarge: .tooLarge
            default: .badRequest
            }
        self.init(code, error.message)
    }

    /// A script's error reply (`-NOTMEMBER …`) or a transport failure.
    init(redis error: RedisError) {
        guard error.code == .serverError else {
            self.init(.unavailable, "Redis is unavailable")
            return
        }
        let detail = String(error.replyDetail)
        switch error.replyCode {
        case "NOTFOUND": self.init(.notFound, detail)
        case "NOTMEMBER", "FORBIDDEN": self.init(.forbidden, detail)
        case "CONFLICT": self.init(.conflict, detail)
        case "BADREQUEST", "BADSEQ", "TOOMANY": self.init(.badRequest, detail)
        case "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "OOM", "UNBLOCKED":
            self.init(.unavailable, Self.unavailableReason(error.replyCode ?? ""))
        default: self.init(.internal, "unexpected Redis error")
        }
    }

    /// What a Redis error reply that means "not now" says to a client, without the reply's own
    /// text (a script's hash and line, Redis's wording).
    static func unavailableReason(_ code: Substring) -> String {
        switch code {
        case "OOM": "Redis is out of memory (maxmemory reached): try again later"
        case "LOADING": "Redis is loading its data: try again shortly"
        case "BUSY": "Redis is busy running a script: try again shortly"
        case "READONLY", "MASTERDOWN", "UNBLOCKED": "Redis is a replica, or lost its primary: try again shortly"
        default: "the Redis Cluster is moving or missing this channel's slot: try again shortly"
        }
    }
}
