import Hummingbird

/// Verifies `Authorization: Bearer <JWT>` and records who the caller is.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = RelayRequestContext
    let verifier: HS256

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let header = request.headers[.authorization] else {
            throw APIError(.unauthorized, "missing bearer token")
        }
        guard header.count > 7, header.prefix(7).lowercased() == "bearer " else {
            throw APIError(.unauthorized, "the Authorization header must be 'Bearer <token>'")
        }
        var context = context
        context.identity = try self.verify(header.dropFirst(7))
        return try await next(request, context)
    }

    func verify(_ token: some StringProtocol) throws(APIError) -> JWTClaims {
        do {
            return try self.verifier.verify(token, now: Clock.seconds())
        } catch {
            throw APIError(.unauthorized, error.message)
        }
    }
}
