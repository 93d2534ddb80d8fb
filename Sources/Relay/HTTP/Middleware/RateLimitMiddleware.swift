import Hummingbird

/// Counts each write request (`POST`, `PATCH`, `DELETE`) against its caller's
/// ``RateLimiter``; reads are not limited. After ``AuthMiddleware``.
struct RateLimitMiddleware: RouterMiddleware {
    typealias Context = RelayRequestContext
    let limiter: RateLimiter

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        switch request.method {
        case .get, .head, .options:
            break
        default:
            if let seconds = self.limiter.take(try context.caller().userID) {
                throw self.limiter.refusal(retryAfter: seconds)
            }
        }
        return try await next(request, context)
    }
}
