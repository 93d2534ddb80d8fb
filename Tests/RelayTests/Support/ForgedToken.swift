import COpenSSL
import Foundation

/// Hand-made JWTs, for the tokens `HS256.sign` refuses to make: other algorithms, missing or
/// ill-typed claims.
enum ForgedToken {
    /// `header.payload.signature` with `header` and `payload` as given (JSON text), signed with
    /// HMAC-SHA256 under `secret`, or with an empty signature if `secret` is `nil`.
    static func make(header: String, payload: String, secret: [UInt8]?) -> String {
        let signingInput = base64URL(Array(header.utf8)) + "." + base64URL(Array(payload.utf8))
        guard let secret else { return signingInput + "." }
        return signingInput + "." + base64URL(hmacSHA256(key: secret, Array(signingInput.utf8)))
    }

    /// Unpadded base64url.
    static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func hmacSHA256(key: [UInt8], _ input: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        let result = HMAC(EVP_sha256(), key, Int32(key.count), input, input.count, &digest, &length)
        precondition(result != nil && length == 32, "HMAC-SHA256 failed")
        return digest
    }
}
