/// Why a token was refused.
///
/// Every case means the same thing to a client, `401 unauthorized`; `message` is written to
/// be returned in that response's body and says what was wrong without echoing the token.
/// Compare on `code`: messages may become more specific over time.
public struct JWTError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The kind of failure: a struct rather than an enum so that codes can be added later.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String

        private init(_ name: String) {
            self.name = name
        }

        /// The token is not three canonical base64url segments of JSON objects within the size
        /// limit, or its header or claims have the wrong shape (including ids outside the
        /// allowed characters).
        public static let malformed = Code("malformed")
        /// The header's `alg` is anything but exactly `HS256`.
        public static let unsupportedAlgorithm = Code("unsupported_algorithm")
        /// The signature is not the HMAC-SHA256 of the token under the configured secret.
        public static let badSignature = Code("bad_signature")
        /// The `exp` claim is not after the verification time.
        public static let expired = Code("expired")
        /// The `nbf` claim is after the verification time.
        public static let notYetValid = Code("not_yet_valid")

        public var description: String { name }
    }

    public let code: Code
    public let message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "JWTError(\(code)): \(message)" }
}

extension JWTError {
    static let malformed = JWTError(code: .malformed, message: "malformed token")
    static let unsupportedAlgorithm = JWTError(code: .unsupportedAlgorithm, message: "unsupported alg")
    static let unsupportedType = JWTError(code: .malformed, message: "unsupported typ")
    static let badSignature = JWTError(code: .badSignature, message: "bad signature")
    static let expired = JWTError(code: .expired, message: "token expired")
    static let notYetValid = JWTError(code: .notYetValid, message: "token not valid yet (nbf)")
    static let unsupportedCritical = JWTError(code: .malformed, message: "unsupported crit header")

    static func missingClaim(_ name: String) -> JWTError {
        JWTError(code: .malformed, message: "missing \(name) claim")
    }

    static func invalidClaim(_ name: String) -> JWTError {
        JWTError(code: .malformed, message: "invalid \(name) claim")
    }
}
