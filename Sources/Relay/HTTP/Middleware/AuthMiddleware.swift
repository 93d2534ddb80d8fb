import Hummingbird

/// Verifies `Authorization: Bearer <JWT>` and records who the caller is.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = RelayRequestContext
    let verifier: HS256

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        switch Self.credentials(request.headers[values: .authorization]) {
        case .none:
            throw APIError(.unauthorized, "missing bearer token")
        case .malformed:
            throw APIError(.unauthorized, "the Authorization header must be one 'Bearer <token>'")
        case .token(let token):
            var context = context
            context.identity = try self.verify(token)
            return try await next(request, context)
        }
    }

    /// What the `Authorization` header says, read the same way for REST and for a WebSocket.
    enum Credentials: Equatable {
        /// No `Authorization` header.
        case none
        /// One header, `Bearer` (in any case), one or more spaces, then the token.
        case token(Substring)
        /// Another scheme, no token, or the header given twice (which one counts would be a guess).
        case malformed
    }

    static func credentials(_ values: [String]) -> Credentials {
        guard let value = values.first else { return .none }
        guard values.count == 1, value.count > 7, value.prefix(7).lowercased() == "bearer " else { return .malformed }
        let token = value.dropFirst(7).drop { $0 == " " }
        return token.isEmpty ? .malformed : .token(token)
    }

    func verify(_ token: some StringProtocol) throws(APIError) -> JWTClaims {
        do {
            return try self.verifier.verify(token, now: Clock.seconds())
        } catch {
            throw APIError(.unauthorized, error.message)
        }
    }
}
