import COpenSSL
import Foundation

/// What the relay takes from a verified token.
public struct JWTClaims: Sendable, Equatable {
    /// The session id a token without `sid` stands for.
    public static let defaultSessionID = "default"

    /// `sub`: the user.
    public var userID: String
    /// `sid`: the session or device; ``defaultSessionID`` when the token has no `sid`.
    public var sessionID: String
    /// `exp`: unix seconds. The token is refused from this second on, not only after it.
    public var expiresAt: Int64

    public init(userID: String, sessionID: String = JWTClaims.defaultSessionID, expiresAt: Int64) {
        self.userID = userID
        self.sessionID = sessionID
        self.expiresAt = expiresAt
    }
}

/// Signs and verifies HS256 (HMAC-SHA256) JSON Web Tokens under one shared secret.
///
/// Only the compact form with `alg` exactly `HS256` is accepted; the algorithm is never taken
/// from the token, so `none`, `HS512`, `RS256` and spellings like `hs256` are refused before
/// any signature work. The claims read are `sub`, `exp`, `nbf` and `sid`; others (`iat`, `aud`,
/// …) are ignored. `sub` and `sid` must be relay ids (``Identifier``). Header and claims are strict JSON (a name given twice is refused, not
/// read one way or the other), and a header with `crit` is refused: the relay understands no
/// extension (RFC 7515 §4.1.11).
public struct HS256: Sendable {
    /// Tokens longer than this many bytes are refused unread: they arrive in headers and query
    /// strings, and nothing the relay issues comes close.
    public static let maxTokenLength = 8 * 1024
    /// The shortest secret `relay serve` and `relay token` accept (RFC 7518 §3.2: at least the
    /// hash's size; a shorter one is brute-forced offline from any token).
    public static let minimumSecretBytes = 32

    private static let digestLength = 32
    private static let dot = UInt8(ascii: ".")
    /// `{"alg":"HS256","typ":"JWT"}`, the only header this type writes.
    private static let encodedHeader = Base64URL.encode(#"{"alg":"HS256","typ":"JWT"}"#.utf8)

    private let secret: [UInt8]

    /// Creates a signer and verifier for `secret`.
    ///
    /// - Precondition: `secret` is not empty. RFC 7518 asks for at least 32 bytes; shorter
    ///   secrets work but are weak.
    public init(secret: [UInt8]) {
        precondition(!secret.isEmpty, "an HS256 secret must not be empty")
        self.secret = secret
    }

    /// 32 bytes from OpenSSL's CSPRNG, for a dev-mode secret that lives as long as the process.
    public static func randomSecret() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 32)
        guard RAND_bytes(&bytes, Int32(bytes.count)) == 1 else {
            preconditionFailure("RAND_bytes failed: no secure randomness available")
        }
        return bytes
    }

    /// Returns a compact JWT carrying `claims` (as `sub`, `sid`, `exp`) and, if given,
    /// `issuedAt` as `iat`.
    ///
    /// The claims are signed as given: a `userID` or `sessionID` that is not a valid relay id
    /// yields a token ``verify(_:now:)`` refuses, so validate ids before signing.
    public func sign(_ claims: JWTClaims, issuedAt: Int64? = nil) -> String {
        let payload = Payload(sub: claims.userID, sid: claims.sessionID, exp: claims.expiresAt, iat: issuedAt)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let json: Data
        do {
            json = try encoder.encode(payload)
        } catch {
            preconditionFailure("encoding strings and integers cannot fail: \(error)")
        }
        let signingInput = Self.encodedHeader + "." + Base64URL.encode(json)
        return signingInput + "." + Base64URL.encode(mac(signingInput.utf8))
    }

    /// Checks `token` and returns its claims.
    ///
    /// Nothing from the payload is read before the signature has been checked, and the
    /// signature is compared in constant time.
    ///
    /// - Parameter now: unix seconds; the token must have `exp > now`, and `nbf <= now` if it
    ///   has an `nbf`.
    /// - Throws: ``JWTError`` with `.malformed` (shape, encoding, size, header `typ` or `crit`,
    ///   a name given twice, or a missing or invalid `sub`/`exp`/`nbf`/`sid`),
    ///   `.unsupportedAlgorithm`, `.badSignature`, `.expired` or `.notYetValid`.
    public func verify(_ token: some StringProtocol, now: Int64) throws(JWTError) -> JWTClaims {
        let bytes = token.utf8
        guard bytes.count <= Self.maxTokenLength,
            let firstDot = bytes.firstIndex(of: Self.dot)
        else { throw .malformed }
        let payloadStart = bytes.index(after: firstDot)
        guard let secondDot = bytes[payloadStart...].firstIndex(of: Self.dot) else { throw .malformed }
        let signatureStart = bytes.index(after: secondDot)
        guard !bytes[signatureStart...].contains(Self.dot) else { throw .malformed }

        guard let headerJSON = Base64URL.decode(bytes[..<firstDot]) else { throw .malformed }
        let header = try Header(self.object(headerJSON))
        guard header.alg == "HS256" else { throw .unsupportedAlgorithm }
        // RFC 7515 section 4.1.9: "JWT" or its media type, in any case.
        if let type = header.typ, !["jwt", "application/jwt"].contains(type.lowercased()) { throw .unsupportedType }
        if header.hasCritical { throw .unsupportedCritical }

        guard let signature = Base64URL.decode(bytes[signatureStart...]) else { throw .malformed }
        guard signature.count == Self.digestLength else { throw .badSignature }
        let expected = mac(bytes[..<secondDot])
        guard CRYPTO_memcmp(expected, signature, Self.digestLength) == 0 else { throw .badSignature }

        guard let payloadJSON = Base64URL.decode(bytes[payloadStart..<secondDot]) else { throw .malformed }
        let payload = try Payload(self.object(payloadJSON))
        guard payload.exp > now else { throw .expired }
        if let notBefore = payload.nbf, notBefore > now { throw .notYetValid }
        return JWTClaims(
            userID: payload.sub,
            sessionID: payload.sid ?? JWTClaims.defaultSessionID,
            expiresAt: payload.exp
        )
    }

    /// HMAC-SHA256 of `input` under the secret.
    func mac(_ input: some Collection<UInt8>) -> [UInt8] {
        if let digest = input.withContiguousStorageIfAvailable({ mac(contiguous: $0) }) {
            return digest
        }
        return Array(input).withUnsafeBufferPointer { mac(contiguous: $0) }
    }

    private func mac(contiguous input: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: Self.digestLength)
        var length: UInt32 = 0
        let result = secret.withUnsafeBytes { key in
            digest.withUnsafeMutableBufferPointer { output in
                HMAC(
                    EVP_sha256(),
                    key.baseAddress,
                    Int32(key.count),
                    input.baseAddress,
                    input.count,
                    output.baseAddress,
                    &length
                )
            }
        }
        // With the default provider this fails only when allocation does.
        guard result != nil, length == Self.digestLength else {
            preconditionFailure("HMAC-SHA256 failed")
        }
        return digest
    }

    /// The JSON object `json` holds, read strictly (a name given twice is refused, not read one
    /// way or the other).
    private func object(_ json: [UInt8]) throws(JWTError) -> StrictJSON.Value {
        guard let value = StrictJSON.parse(json), case .object = value else { throw .malformed }
        return value
    }
}

extension HS256 {
    /// The JOSE header: refused only if it is not a JSON object or `typ` is not a string; a
    /// non-string `alg` becomes `nil` so that it is reported as an unsupported algorithm.
    private struct Header {
        var alg: String?
        var typ: String?
        /// Whether the header names extensions that must be understood (`crit`).
        var hasCritical: Bool

        init(_ object: StrictJSON.Value) throws(JWTError) {
            self.alg = object["alg"]?.string
            self.hasCritical = object["crit"] != nil
            switch object["typ"] {
            case nil, .null?: self.typ = nil
            case .string(let type)?: self.typ = type
            default: throw .unsupportedType
            }
        }
    }

    /// The claims as they travel. Reading them enforces the contract, throwing ``JWTError``:
    /// `sub` a relay id, `exp` (and `nbf` if present) a NumericDate, `sid` absent or a relay id.
    /// A NumericDate is a number of seconds (RFC 7519 §2): `1e3`, `1000.0` and `1000.5` count
    /// (a fraction is dropped: the token ends at the whole second before), `"1000"` doesn't.
    private struct Payload: Encodable {
        var sub: String
        var sid: String?
        var exp: Int64
        var nbf: Int64?
        var iat: Int64?

        private enum CodingKeys: String, CodingKey {
            case sub, sid, exp, nbf, iat
        }

        init(sub: String, sid: String?, exp: Int64, iat: Int64?) {
            self.sub = sub
            self.sid = sid
            self.exp = exp
            self.iat = iat
        }

        init(_ object: StrictJSON.Value) throws(JWTError) {
            guard let sub = try Self.string(object, "sub") else { throw .missingClaim("sub") }
            guard Identifier.isValid(sub) else { throw .invalidClaim("sub") }
            guard let exp = try Self.numericDate(object, "exp") else { throw .missingClaim("exp") }
            let sid = try Self.string(object, "sid")
            if let sid, !Identifier.isValid(sid) { throw .invalidClaim("sid") }
            self.sub = sub
            self.sid = sid
            self.exp = exp
            self.nbf = try Self.numericDate(object, "nbf")
            self.iat = nil
        }

        /// A string claim; `nil` if absent or null.
        private static func string(_ object: StrictJSON.Value, _ name: String) throws(JWTError) -> String? {
            switch object[name] {
            case nil, .null?: return nil
            case .string(let text)?: return text
            default: throw .invalidClaim(name)
            }
        }

        /// A NumericDate claim in whole seconds, the fraction dropped; `nil` if absent or null.
        private static func numericDate(_ object: StrictJSON.Value, _ name: String) throws(JWTError) -> Int64? {
            switch object[name] {
            case nil, .null?:
                return nil
            case .number(let text)?:
                if let whole = Int64(text) { return whole }
                // Within ±2^62: whatever the fraction, the whole seconds fit an Int64.
                guard let seconds = Double(text), seconds.isFinite, abs(seconds) < 0x1p62 else { throw .invalidClaim(name) }
                return Int64(seconds.rounded(.down))
            default:
                throw .invalidClaim(name)
            }
        }
    }
}
