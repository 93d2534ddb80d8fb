import Hummingbird

/// The context of one request: who is asking, once the token has been verified.
struct RelayRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// Set by ``AuthMiddleware`` on authenticated routes.
    var identity: JWTClaims?

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.identity = nil
    }

    /// The verified caller.
    ///
    /// - Throws: `unauthorized` on a route that the auth middleware did not guard (a bug, but
    ///   not one to answer with a 500 or a crash).
    func caller() throws -> JWTClaims {
        guard let identity = self.identity else { throw APIError(.unauthorized, "missing bearer token") }
        return identity
    }
}
