import COpenSSL
import Foundation

/// Signs HS256 tokens as `relay token` does, so that thousands of users need no round trips.
struct JWTSigner: Sendable {
    let secret: [UInt8]

    init(secret: String) {
        self.secret = Array(secret.utf8)
    }

    /// A token for `user`, valid for a day.
    func token(user: String) -> String {
        let expires = Int(Date().timeIntervalSince1970) + 86_400
        let header = Self.base64URL(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let payload = Self.base64URL(Array(#"{"sub":"\#(user)","exp":\#(expires)}"#.utf8))
        let input = Array("\(header).\(payload)".utf8)
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        let result = self.secret.withUnsafeBytes { key in
            input.withUnsafeBytes { data in
                digest.withUnsafeMutableBufferPointer { output in
                    HMAC(EVP_sha256(), key.baseAddress, Int32(key.count), data.baseAddress, data.count, output.baseAddress, &length)
                }
            }
        }
        guard result != nil, length == 32 else { preconditionFailure("HMAC-SHA256 failed") }
        return "\(header).\(payload).\(Self.base64URL(digest))"
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
