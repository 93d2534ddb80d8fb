import NIOHTTP1
import Testing

@testable import Relay

/// Checks that `token` is refused with `code` by a verifier holding the vectors' secret.
private func expectRejected(
    _ token: String,
    _ code: JWTError.Code,
    now: Int64 = PyJWTVectors.now,
    secret: [UInt8] = PyJWTVectors.secret,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    let error = #expect(throws: JWTError.self, sourceLocation: sourceLocation) {
        try HS256(secret: secret).verify(token, now: now)
    }
    #expect(error?.code == code, "\(String(describing: error))", sourceLocation: sourceLocation)
}

private func segments(_ token: String) -> [Substring] {
    token.split(separator: ".", omittingEmptySubsequences: false)
}

@Suite("HS256 signing and accepted tokens")
struct JWTTests {
    let hs256 = HS256(secret: PyJWTVectors.secret)
    let now = PyJWTVectors.now

    @Test func pyJWTTokenVerifiesWithItsClaims() throws {
        let claims = try hs256.verify(PyJWTVectors.valid, now: now)
        #expect(claims == JWTClaims(userID: "alice", sessionID: "laptop", expiresAt: now + 3600))
    }

    @Test func missingSIDMeansDefaultSession() throws {
        let claims = try hs256.verify(PyJWTVectors.validNoSID, now: now)
        #expect(claims == JWTClaims(userID: "bob", sessionID: "default", expiresAt: now + 60))
    }

    @Test func extraClaimsAreIgnoredAndExpIsExclusive() throws {
        let claims = try hs256.verify(PyJWTVectors.validExtraClaims, now: now)
        #expect(claims == JWTClaims(userID: "carol.x_1-Z", expiresAt: now + 1))
        expectRejected(PyJWTVectors.validExtraClaims, .expired, now: now + 1)
    }

    @Test func headerWithoutTypOrWithLowercaseTypIsAccepted() throws {
        let expected = JWTClaims(userID: "alice", expiresAt: now + 3600)
        #expect(try hs256.verify(PyJWTVectors.validNoTyp, now: now) == expected)
        #expect(try hs256.verify(PyJWTVectors.validLowercaseTyp, now: now) == expected)
    }

    @Test func expWrittenAsAnIntegralNumberIsAccepted() throws {
        #expect(try hs256.verify(PyJWTVectors.validFloatExp, now: now).expiresAt == now + 10)
        #expect(try hs256.verify(PyJWTVectors.validExponentExp, now: now).expiresAt == 2_000_000_000)
    }

    @Test func idsOf64CharactersAreAccepted() throws {
        let claims = try hs256.verify(PyJWTVectors.validLongestIDs, now: now)
        #expect(claims.userID == String(repeating: "u", count: 64))
        #expect(claims.sessionID == String(repeating: "s", count: 64))
    }

    @Test func signProducesPyJWTsTokenByteForByte() {
        let withIAT = hs256.sign(
            JWTClaims(userID: "alice", sessionID: "laptop", expiresAt: now + 3600),
            issuedAt: now
        )
        #expect(withIAT == PyJWTVectors.pyjwtOfSortedClaims)
        let withoutIAT = hs256.sign(JWTClaims(userID: "alice", expiresAt: now + 3600))
        #expect(withoutIAT == PyJWTVectors.pyjwtOfSortedClaimsNoIAT)
    }

    @Test func signThenVerifyRoundTrips() throws {
        let secret = HS256.randomSecret()
        let signer = HS256(secret: secret)
        let claims = JWTClaims(userID: "user-1_A.b", sessionID: "phone", expiresAt: now + 5)
        let token = signer.sign(claims, issuedAt: now)
        #expect(segments(token).count == 3)
        #expect(try signer.verify(token, now: now) == claims)
        #expect(try signer.verify(token, now: now + 4) == claims)
        expectRejected(token, .expired, now: now + 5, secret: secret)
        expectRejected(token, .badSignature, secret: PyJWTVectors.secret)
    }

    @Test func verifyAcceptsASubstring() throws {
        let header = "Bearer " + PyJWTVectors.valid
        let token = header.dropFirst("Bearer ".count)
        #expect(try hs256.verify(token, now: now).userID == "alice")
    }

    @Test func randomSecretIs32FreshBytes() {
        let first = HS256.randomSecret()
        let second = HS256.randomSecret()
        #expect(first.count == 32)
        #expect(second.count == 32)
        #expect(first != second)
    }

    @Test func tokenOfExactly8KiBIsAccepted() throws {
        let token = paddedToken(PyJWTVectors.fitsPadLength, signature: PyJWTVectors.fitsSignature)
        #expect(token.utf8.count == HS256.maxTokenLength)
        #expect(try hs256.verify(token, now: now).userID == "alice")
    }

    @Test func errorMessagesAreFitForA401Body() {
        #expect(JWTError.expired.message == "token expired")
        #expect(JWTError.unsupportedAlgorithm.message == "unsupported alg")
        #expect(JWTError.badSignature.message == "bad signature")
        #expect(JWTError.malformed.message == "malformed token")
        #expect(JWTError.missingClaim("exp").message == "missing exp claim")
    }
}

/// Rebuilds the PyJWT token whose payload is `{"sub":"alice","exp":now+3600,"pad":"x…"}`.
private func paddedToken(_ padLength: Int, signature: String) -> String {
    let payload = #"{"sub":"alice","exp":1700003600,"pad":""# + String(repeating: "x", count: padLength) + #""}"#
    return "\(segments(PyJWTVectors.valid)[0]).\(Base64URL.encode(payload.utf8)).\(signature)"
}

@Suite("HS256 refuses forged and broken tokens")
struct JWTAttackTests {
    @Test func algNoneIsRefused() {
        expectRejected(PyJWTVectors.algNoneEmptySignature, .unsupportedAlgorithm)
        expectRejected(PyJWTVectors.algNoneCopiedSignature, .unsupportedAlgorithm)
    }

    @Test func otherAlgorithmsAreRefusedEvenWhenTheHMACMatches() {
        expectRejected(PyJWTVectors.algHS512, .unsupportedAlgorithm)
        expectRejected(PyJWTVectors.algRS256, .unsupportedAlgorithm)
    }

    @Test func algMustBeExactlyHS256() {
        expectRejected(PyJWTVectors.algLowercase, .unsupportedAlgorithm)
        expectRejected(PyJWTVectors.algMixedCase, .unsupportedAlgorithm)
        expectRejected(PyJWTVectors.algTrailingSpace, .unsupportedAlgorithm)
        expectRejected(PyJWTVectors.algMissing, .unsupportedAlgorithm)
        expectRejected(PyJWTVectors.algNotString, .unsupportedAlgorithm)
        expectRejected(PyJWTVectors.algNull, .unsupportedAlgorithm)
    }

    @Test func algIsCheckedBeforeTheSignature() {
        expectRejected(PyJWTVectors.algHS512, .unsupportedAlgorithm, secret: PyJWTVectors.otherSecret)
    }

    @Test func typOtherThanJWTIsRefused() {
        expectRejected(PyJWTVectors.typJWS, .malformed)
        expectRejected(PyJWTVectors.typNotString, .malformed)
    }

    /// `typ` is `JWT` or its media type `application/jwt`, in any case (RFC 7515 section 4.1.9).
    @Test(arguments: ["JWT", "jwt", "application/jwt", "Application/JWT"])
    func typJWTOrItsMediaTypeIsAccepted(_ type: String) throws {
        let token = ForgedToken.make(
            header: #"{"alg":"HS256","typ":"\#(type)"}"#,
            payload: #"{"sub":"alice","exp":\#(PyJWTVectors.now + 60)}"#,
            secret: PyJWTVectors.secret
        )
        #expect(try HS256(secret: PyJWTVectors.secret).verify(token, now: PyJWTVectors.now).userID == "alice")
    }

    /// The `Authorization` header, as REST and the WebSocket upgrade both read it: one
    /// `Bearer <token>` (the scheme in any case, one or more spaces), or it is refused; without it,
    /// a WebSocket reads `?token=`, but a header that is not one good `Bearer` is never passed over
    /// for the query's token.
    @Test func theAuthorizationHeaderIsOneBearerToken() {
        #expect(AuthMiddleware.credentials([]) == .none)
        #expect(AuthMiddleware.credentials(["Bearer abc"]) == .token("abc"))
        #expect(AuthMiddleware.credentials(["bearer   abc"]) == .token("abc"))
        for bad in [["Basic YTpi"], ["Token abc"], ["Bearer"], ["Bearer "], ["Bearer   "], ["Bearer abc", "Bearer abc"]] {
            #expect(AuthMiddleware.credentials(bad) == .malformed, "\(bad)")
        }
        let good = PyJWTVectors.valid
        func head(_ headers: [(String, String)]) -> HTTPRequestHead {
            HTTPRequestHead(version: .http1_1, method: .GET, uri: "/ws?token=\(good)", headers: HTTPHeaders(headers))
        }
        #expect(RelayWebSocket.token(head([])) == good)
        #expect(RelayWebSocket.token(head([("Authorization", "Bearer other")])) == "other")
        #expect(RelayWebSocket.token(head([("Authorization", "Basic YTpi")])) == nil)
        #expect(RelayWebSocket.token(head([("Authorization", "Bearer \(good)"), ("Authorization", "Bearer \(good)")])) == nil)
    }

    @Test func wrongSecretIsRefused() {
        expectRejected(PyJWTVectors.wrongSecret, .badSignature)
        expectRejected(PyJWTVectors.valid, .badSignature, secret: PyJWTVectors.otherSecret)
    }

    @Test func payloadIsNotReadBeforeTheSignature() {
        expectRejected(PyJWTVectors.missingSub, .badSignature, secret: PyJWTVectors.otherSecret)
        expectRejected(PyJWTVectors.payloadNotJSON, .badSignature, secret: PyJWTVectors.otherSecret)
    }

    @Test func flippedSignatureBitIsRefused() throws {
        expectRejected(PyJWTVectors.flippedSignatureBit, .badSignature)
        let parts = segments(PyJWTVectors.valid)
        let signature = try #require(Base64URL.decode(parts[2].utf8))
        for bit in 0..<(signature.count * 8) {
            var forged = signature
            forged[bit / 8] ^= 1 << (bit % 8)
            expectRejected("\(parts[0]).\(parts[1]).\(Base64URL.encode(forged))", .badSignature)
        }
    }

    @Test func signatureOfTheWrongLengthIsRefused() {
        expectRejected(PyJWTVectors.truncatedSignature, .badSignature)
        expectRejected(PyJWTVectors.longSignature, .badSignature)
        expectRejected(PyJWTVectors.emptySignature, .badSignature)
        #expect(throws: JWTError.self) {
            try HS256(secret: PyJWTVectors.secret).verify(PyJWTVectors.valid.dropLast(), now: PyJWTVectors.now)
        }
    }

    @Test func signatureMustBeCanonicalUnpaddedBase64URL() {
        expectRejected(PyJWTVectors.nonCanonicalSignature, .malformed)
        expectRejected(PyJWTVectors.paddedSignature, .malformed)
    }

    @Test func extraSegmentIsRefused() {
        expectRejected(PyJWTVectors.valid + ".", .malformed)
        expectRejected(PyJWTVectors.valid + ".e30", .malformed)
    }

    @Test func missingSegmentIsRefused() {
        let parts = segments(PyJWTVectors.valid)
        expectRejected("\(parts[0]).\(parts[1])", .malformed)
        expectRejected(String(parts[0]), .malformed)
        expectRejected("", .malformed)
        expectRejected("..", .malformed)
    }

    @Test func nonBase64URLCharactersAreRefused() {
        expectRejected(PyJWTVectors.standardBase64Payload, .malformed)
        expectRejected(PyJWTVectors.invalidCharacterInHeader, .malformed)
        let parts = segments(PyJWTVectors.valid)
        expectRejected("\(parts[0])é.\(parts[1]).\(parts[2])", .malformed)
    }

    @Test func paddedPayloadIsRefused() {
        expectRejected(PyJWTVectors.paddedPayload, .malformed)
    }

    @Test func missingExpIsRefused() {
        expectRejected(PyJWTVectors.missingExp, .malformed)
        expectRejected(PyJWTVectors.expNull, .malformed)
    }

    @Test func expInThePastOrNowIsExpired() {
        expectRejected(PyJWTVectors.expInThePast, .expired)
        expectRejected(PyJWTVectors.expIsNow, .expired)
    }

    @Test func expThatIsNotANumberOrOutOfRangeIsRefused() {
        expectRejected(PyJWTVectors.expString, .malformed)
        expectRejected(PyJWTVectors.expBool, .malformed)
        expectRejected(PyJWTVectors.expOverflow, .malformed)
    }

    /// A NumericDate may have a fraction (RFC 7519 §2): the token ends at the whole second before.
    @Test func expWithAFractionIsAcceptedAndEndsAtTheWholeSecondBefore() throws {
        #expect(
            try HS256(secret: PyJWTVectors.secret).verify(PyJWTVectors.expFraction, now: PyJWTVectors.now).expiresAt == PyJWTVectors.now
                + 10
        )
        expectRejected(PyJWTVectors.expFraction, .expired, now: PyJWTVectors.now + 10)
    }

    /// A claim given twice is refused, not read one way or the other (which `sub` would it be?).
    @Test func aClaimGivenTwiceIsRefused() {
        let twice = ForgedToken.make(
            header: #"{"alg":"HS256","typ":"JWT"}"#,
            payload: #"{"sub":"alice","sub":"bob","exp":\#(PyJWTVectors.now + 60)}"#,
            secret: PyJWTVectors.secret
        )
        expectRejected(twice, .malformed)
        let headerTwice = ForgedToken.make(
            header: #"{"alg":"HS256","alg":"HS256"}"#,
            payload: #"{"sub":"alice","exp":\#(PyJWTVectors.now + 60)}"#,
            secret: PyJWTVectors.secret
        )
        expectRejected(headerTwice, .malformed)
    }

    /// `sub` and `sid` must be relay ids: `.` and `..` are not (no URL path could name them).
    @Test(arguments: [#""sub":".""#, #""sub":"..""#, #""sub":"alice","sid":"..""#, #""sub":"a b""#])
    func aSubjectOrSessionThatIsNotAnIDIsRefused(_ claims: String) {
        let token = ForgedToken.make(
            header: #"{"alg":"HS256","typ":"JWT"}"#,
            payload: #"{\#(claims),"exp":\#(PyJWTVectors.now + 60)}"#,
            secret: PyJWTVectors.secret
        )
        expectRejected(token, .malformed)
    }

    /// `crit` names extensions a verifier must understand; the relay understands none (RFC 7515 §4.1.11).
    @Test func aCriticalHeaderIsRefused() {
        let critical = ForgedToken.make(
            header: #"{"alg":"HS256","crit":["exp"],"exp":1}"#,
            payload: #"{"sub":"alice","exp":\#(PyJWTVectors.now + 60)}"#,
            secret: PyJWTVectors.secret
        )
        expectRejected(critical, .malformed)
    }

    /// A token is not accepted before its `nbf` (RFC 7519 §4.1.5); from that second on, it is.
    @Test func aTokenIsRefusedBeforeItsNotBefore() throws {
        let token = ForgedToken.make(
            header: #"{"alg":"HS256","typ":"JWT"}"#,
            payload: #"{"sub":"alice","exp":\#(PyJWTVectors.now + 60),"nbf":\#(PyJWTVectors.now + 10)}"#,
            secret: PyJWTVectors.secret
        )
        expectRejected(token, .notYetValid)
        expectRejected(token, .notYetValid, now: PyJWTVectors.now + 9)
        #expect(try HS256(secret: PyJWTVectors.secret).verify(token, now: PyJWTVectors.now + 10).userID == "alice")
        let badNotBefore = ForgedToken.make(
            header: #"{"alg":"HS256","typ":"JWT"}"#,
            payload: #"{"sub":"alice","exp":\#(PyJWTVectors.now + 60),"nbf":"soon"}"#,
            secret: PyJWTVectors.secret
        )
        expectRejected(badNotBefore, .malformed)
    }

    @Test func missingSubIsRefused() {
        expectRejected(PyJWTVectors.missingSub, .malformed)
    }

    @Test func subOutsideTheIDCharsetIsRefused() {
        expectRejected(PyJWTVectors.subEmpty, .malformed)
        expectRejected(PyJWTVectors.subWithSpace, .malformed)
        expectRejected(PyJWTVectors.subWithSlash, .malformed)
        expectRejected(PyJWTVectors.subNonASCII, .malformed)
        expectRejected(PyJWTVectors.subTooLong, .malformed)
        expectRejected(PyJWTVectors.subNumber, .malformed)
    }

    @Test func sidOutsideTheIDCharsetIsRefused() {
        expectRejected(PyJWTVectors.sidWithColon, .malformed)
        expectRejected(PyJWTVectors.sidEmpty, .malformed)
        expectRejected(PyJWTVectors.sidNumber, .malformed)
    }

    @Test func tokenOver8KiBIsRefused() {
        let token = paddedToken(PyJWTVectors.overPadLength, signature: PyJWTVectors.overSignature)
        #expect(token.utf8.count > HS256.maxTokenLength)
        expectRejected(token, .malformed)
        expectRejected(String(repeating: "a", count: 9000), .malformed)
    }

    @Test func headerThatIsNotAJSONObjectIsRefused() {
        expectRejected(PyJWTVectors.headerNotJSON, .malformed)
        expectRejected(PyJWTVectors.headerArray, .malformed)
        expectRejected(PyJWTVectors.headerString, .malformed)
    }

    @Test func payloadThatIsNotAJSONObjectIsRefused() {
        expectRejected(PyJWTVectors.payloadNotJSON, .malformed)
        expectRejected(PyJWTVectors.payloadArray, .malformed)
        expectRejected(PyJWTVectors.payloadString, .malformed)
        expectRejected(PyJWTVectors.payloadNumber, .malformed)
        expectRejected(PyJWTVectors.payloadNull, .malformed)
    }
}

@Suite("Base64URL")
struct Base64URLTests {
    @Test func encodesRFC4648VectorsWithoutPadding() {
        let vectors = ["": "", "f": "Zg", "fo": "Zm8", "foo": "Zm9v", "foob": "Zm9vYg", "fooba": "Zm9vYmE", "foobar": "Zm9vYmFy"]
        for (plain, encoded) in vectors {
            #expect(Base64URL.encode(plain.utf8) == encoded)
            #expect(Base64URL.decode(encoded.utf8) == Array(plain.utf8))
        }
        #expect(Base64URL.encode([0xFB, 0xFF]) == "-_8")
    }

    @Test func roundTripsEveryLength() {
        var generator = SystemRandomNumberGenerator()
        for length in 0..<70 {
            let bytes = (0..<length).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
            #expect(Base64URL.decode(Base64URL.encode(bytes).utf8) == bytes)
        }
    }

    @Test func refusesAnythingButCanonicalUnpaddedText() {
        for text in ["Zg==", "Zm8=", "Zh", "Zm9", "Z", "Zm9vY", "Zm9v+", "Zm/v", "Zm9v ", "Zm\u{0}v"] {
            #expect(Base64URL.decode(text.utf8) == nil, "\(text.debugDescription)")
        }
    }
}

/// Produced by Fixtures/make_jwt_vectors.py with PyJWT 2.15.1.
// swift-format-ignore
private enum PyJWTVectors {
    static let secret = Array("relay-test-secret-0123456789abcd".utf8)
    static let otherSecret = Array("some-other-secret-0123456789abcd".utf8)
    static let now: Int64 = 1_700_000_000

    /// PyJWT: sub alice, sid laptop, exp now+3600, iat now
    static let valid = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsInNpZCI6ImxhcHRvcCIsImV4cCI6MTcwMDAwMzYwMCwiaWF0IjoxNzAwMDAwMDAwfQ.dmM6Qjizoyn6OF-EEKZ16Ffyutr-T-rZkEo1faguAHU"

    /// PyJWT: sub bob, exp now+60, no sid
    static let validNoSID = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJib2IiLCJleHAiOjE3MDAwMDAwNjB9.dIFh-6qzKLX9v_zqxUh_OlGXHZa7BEjMnLWkmZEOONw"

    /// PyJWT: sub carol.x_1-Z, exp now+1 (the last valid second), plus aud, nbf, jti
    static let validExtraClaims = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJjYXJvbC54XzEtWiIsImV4cCI6MTcwMDAwMDAwMSwiYXVkIjoicmVsYXkiLCJuYmYiOjE3MDAwMDAwMDAsImp0aSI6ImoxIn0.gN0xHFWE_Ajjh5pWgAYJ4kt5vOFx6UnLUBAEoqw6euo"

    /// PyJWT without typ: header {"alg":"HS256"}
    static let validNoTyp = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.r76DiJEYIkQFbcqP7NUK7JuUVacsIc-Te4WIQXdSTbE"

    /// header typ "jwt"
    static let validLowercaseTyp = "eyJhbGciOiJIUzI1NiIsInR5cCI6Imp3dCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.zQnamYIQ2FoBMQPt_hJnFskn03Ax1N1rKmJgtcw5XJc"

    /// exp now+10.0 (integral float)
    static let validFloatExp = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAxMC4wfQ.DjtqekGYlNGsDbWvFYOKtO_OO7J8FZDjKuaOjFBqW1s"

    /// exp 2e9
    static let validExponentExp = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MmU5fQ.-74dBkchBq2gzWWZSRKAWGmyDXh9E7GG--rOiKEDDFk"

    /// sub and sid of 64 characters
    static let validLongestIDs = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1IiwiZXhwIjoxNzAwMDAzNjAwLCJzaWQiOiJzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3NzIn0.PGYDS59ohCuS3Rwccy-SLA3j7B3L4Uwr6N1Uvm73Zsg"

    /// PyJWT of {exp: now+3600, iat: now, sid: laptop, sub: alice} in that key order
    static let pyjwtOfSortedClaims = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDM2MDAsImlhdCI6MTcwMDAwMDAwMCwic2lkIjoibGFwdG9wIiwic3ViIjoiYWxpY2UifQ.rgjGiBGZwpQF2XBc17rKvclk8hFZHe5oUlEStDJTqlE"

    /// PyJWT of {exp: now+3600, sid: default, sub: alice} in that key order
    static let pyjwtOfSortedClaimsNoIAT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDM2MDAsInNpZCI6ImRlZmF1bHQiLCJzdWIiOiJhbGljZSJ9.jdI_g2q7lQuetITXIBPtG3U0sT64bWIro73Ky7-Vx7Q"

    /// PyJWT alg none: empty signature
    static let algNoneEmptySignature = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0."

    /// alg none header spliced onto the payload and signature of `valid`
    static let algNoneCopiedSignature = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsInNpZCI6ImxhcHRvcCIsImV4cCI6MTcwMDAwMzYwMCwiaWF0IjoxNzAwMDAwMDAwfQ.dmM6Qjizoyn6OF-EEKZ16Ffyutr-T-rZkEo1faguAHU"

    /// PyJWT HS512 with the right secret
    static let algHS512 = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.ZB61_9o6enzlq6514dAGeFv-2pm5JGe-Ej4ebZT6SdtYMehaQTxyJTJSV_cMzE2fDmnnQuI4uVO9FJwOl8pi3Q"

    /// header alg RS256, HMAC-SHA256 signature with the right secret
    static let algRS256 = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.h4Pp6_rMCBBBYlAYKxEO4Q4svQOETLWUqKRtXp7v2NA"

    /// header alg "hs256", correctly signed
    static let algLowercase = "eyJhbGciOiJoczI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.h9Alx4EBvEsg2SCXJi8HkzpRn9Mf1sSnOz6B32-mIko"

    /// header alg "Hs256", correctly signed
    static let algMixedCase = "eyJhbGciOiJIczI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.I3I59emAzi96WGWMHJdV_JcKrAmUWIsLJuJOplqjFTM"

    /// header alg "HS256 ", correctly signed
    static let algTrailingSpace = "eyJhbGciOiJIUzI1NiAiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0._QBN3ax6KwcABWNpUc_qjib7tNzhcvFLI1ZqVIiQnxc"

    /// header without alg, correctly signed
    static let algMissing = "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.K4FYS-fjzDJP5CzQDPMkpw201vxsMivA0HQJXjYSdjo"

    /// header alg 256, correctly signed
    static let algNotString = "eyJhbGciOjI1NiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.LRRWXqqPzesF9ZMAg4UsCH071FJEl8STCftoc6xEbW0"

    /// header alg null, correctly signed
    static let algNull = "eyJhbGciOm51bGwsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.G-iooJVaKRKXsvzDgZiW8F1adkrR51Xv6Uj_HcmZWLM"

    /// header typ "JWS", correctly signed
    static let typJWS = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXUyJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.0_mTuonZKtPVIfuulAiQMb-y8iSQsSHw91f6ZW27uio"

    /// header typ 1, correctly signed
    static let typNotString = "eyJhbGciOiJIUzI1NiIsInR5cCI6MX0.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.HWne--0RMn_MUDl1Y4zH4o6pegAaGM4UvIt3PP5MbZs"

    /// PyJWT with another secret
    static let wrongSecret = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.FxAj80O4V3HUpg7RzZ1Nt2lpt-MqJdKYBsRgJQwsLWw"

    /// `valid` with the signature's first bit flipped
    static let flippedSignatureBit = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsInNpZCI6ImxhcHRvcCIsImV4cCI6MTcwMDAwMzYwMCwiaWF0IjoxNzAwMDAwMDAwfQ.9mM6Qjizoyn6OF-EEKZ16Ffyutr-T-rZkEo1faguAHU"

    /// `valid` with a 31-byte signature (last byte dropped)
    static let truncatedSignature = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsInNpZCI6ImxhcHRvcCIsImV4cCI6MTcwMDAwMzYwMCwiaWF0IjoxNzAwMDAwMDAwfQ.dmM6Qjizoyn6OF-EEKZ16Ffyutr-T-rZkEo1faguAA"

    /// `valid` with a zero byte appended to the signature
    static let longSignature = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsInNpZCI6ImxhcHRvcCIsImV4cCI6MTcwMDAwMzYwMCwiaWF0IjoxNzAwMDAwMDAwfQ.dmM6Qjizoyn6OF-EEKZ16Ffyutr-T-rZkEo1faguAHUA"

    /// `valid` with an empty signature
    static let emptySignature = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsInNpZCI6ImxhcHRvcCIsImV4cCI6MTcwMDAwMzYwMCwiaWF0IjoxNzAwMDAwMDAwfQ."

    /// `valid` whose last signature character has a non-zero unused bit (same bytes when decoded leniently)
    static let nonCanonicalSignature = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsInNpZCI6ImxhcHRvcCIsImV4cCI6MTcwMDAwMzYwMCwiaWF0IjoxNzAwMDAwMDAwfQ.dmM6Qjizoyn6OF-EEKZ16Ffyutr-T-rZkEo1faguAHV"

    /// `valid` with "=" padding on the signature
    static let paddedSignature = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsInNpZCI6ImxhcHRvcCIsImV4cCI6MTcwMDAwMzYwMCwiaWF0IjoxNzAwMDAwMDAwfQ.dmM6Qjizoyn6OF-EEKZ16Ffyutr-T-rZkEo1faguAHU="

    /// payload segment with "=" padding, signed as written
    static let paddedPayload = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMCwic2lkIjoiYWIifQ==.BJBTvTJKAUfVqbk82hwTrnGrxojn-y_C3mmGvPO62hA"

    /// payload segment in standard base64 (+ or /), signed as written
    static let standardBase64Payload = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMCwibm90ZSI6Ij8/PyJ9.ZsNK5Z_eJGHzF56wuR7_68eJJG-b925pMWh_fffJtUY"

    /// "*" in the header segment, signed as written
    static let invalidCharacterInHeader = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9*.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.c2hXWGU3QEfSzeAr11qatfj0GROKnQAOFAlttNPIh9Y"

    /// no exp
    static let missingExp = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9.9ncILM3Ugp37Gl1eDSqZ5GJq4flKI3dCky1bVn1XGME"

    /// exp now-1
    static let expInThePast = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTY5OTk5OTk5OX0.pzfzYufQ4i9W0zC83UYCzjgxmFLytGvVw30Xn5foR4c"

    /// exp now
    static let expIsNow = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0.ZlVDD4VwRQEAcuc2wE9DqyiOf0s0J8H7iS4QzmFdkOA"

    /// exp "1700003600" (a string)
    static let expString = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6IjE3MDAwMDM2MDAifQ.exbO-DDGi8lF7FCA4gg_uye7J-lkylhNRSMGZ_tDkgE"

    /// exp now+10.5
    static let expFraction = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAxMC41fQ.Of2_VhSXd2RaxGw28nxtId25n86PynEx9GnwPVJfc20"

    /// exp true
    static let expBool = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6dHJ1ZX0.q54mvO78dOYIZPZWpVJ_Xr72oHNjOqp5aPdNZtO-kWM"

    /// exp null
    static let expNull = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6bnVsbH0.Ec2_v9D0qcmOZfGC9fCv3qu5lo4QptUtGgNwZfn8vZs"

    /// exp 2^63
    static let expOverflow = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6OTIyMzM3MjAzNjg1NDc3NTgwOH0.baoSX_hTZ64avKof-s_1hfc2BTItTpvr92wvOzgTBzc"

    /// no sub
    static let missingSub = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDM2MDB9.tU_NMaid4w7LfYP7xnF2nv9XqfH61ZFKDkRI89YRjjM"

    /// sub ""
    static let subEmpty = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIiLCJleHAiOjE3MDAwMDM2MDB9.TCpp-U6DXskITy9hC7eLbX2LaV7VBNCRUiOQT_CyWSo"

    /// sub "al ice"
    static let subWithSpace = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbCBpY2UiLCJleHAiOjE3MDAwMDM2MDB9.Hau-yf5qIWouCtlbgSqteWc2iIXO1FiPVlQRdK5BeYA"

    /// sub "alice/x"
    static let subWithSlash = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZS94IiwiZXhwIjoxNzAwMDAzNjAwfQ.f9KCy9a59hISzase73AY0ynPSPfaCMI4rKniVox8t0s"

    /// sub "álice"
    static let subNonASCII = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJcdTAwZTFsaWNlIiwiZXhwIjoxNzAwMDAzNjAwfQ.Imx-p7BZuJY0IuuGR0wb5kLbNuMsK5krcJAZ0FpyS-M"

    /// sub of 65 characters
    static let subTooLong = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dSIsImV4cCI6MTcwMDAwMzYwMH0.4cqXRW_ckDMehnj8jZ87EGQ3dFEyDAXMNFNTlJhZip4"

    /// sub 42
    static let subNumber = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOjQyLCJleHAiOjE3MDAwMDM2MDB9.p8xQ9QjIIe4-Hk7akvvBvI1JOnQNonzBdTxb4z-wLYE"

    /// sid "a:b"
    static let sidWithColon = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMCwic2lkIjoiYTpiIn0.NHeGQxGUToUz4tFbpJcrHO6K6-xAUAC5Gbo0X-S3wwI"

    /// sid ""
    static let sidEmpty = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMCwic2lkIjoiIn0.aTFJuZkOxARteCx8Z8Fg6KebAtrizoWETILarFgjnXw"

    /// sid 7
    static let sidNumber = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMCwic2lkIjo3fQ.cloX5V9PZh7H4t1ZxL5UizeCdu9JkeGl8TTUglSJgHw"

    /// header segment "not json"
    static let headerNotJSON = "bm90IGpzb24.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.iggoVMjfDQJcP3FiL6lgJbFXqkxuP5MF_qc83BSlqX0"

    /// header ["HS256"]
    static let headerArray = "WyJIUzI1NiJd.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.hqLZUsPNz-__dORsfv72tLhk4TPY1Ak0kivaABC4OWU"

    /// header "HS256"
    static let headerString = "IkhTMjU2Ig.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.XYAnQslQw5syKRSM3KVhRVNxv2GcYxOc62Ejvo3MzQo"

    /// payload segment "alice" (not JSON)
    static let payloadNotJSON = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.YWxpY2U.Hk1n7VUZzjGp6DlQjywUP9xzRp2Bm1NtlhwVvCjiOto"

    /// payload ["alice"]
    static let payloadArray = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.WyJhbGljZSJd.ko85Ds6nqOA9FzIHyTNq-XUfG3fWJwPqDpGcX1-uCow"

    /// payload "alice"
    static let payloadString = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.ImFsaWNlIg.4rqobqVNVEpvwkHXJn7oYzXJC7SlDsVSyejB9CTAQes"

    /// payload 42
    static let payloadNumber = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.NDI.ly2q5OUvcUmj4d6TBmFUgr22xvbOQFoa2-WYpoy4zHs"

    /// payload null
    static let payloadNull = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.bnVsbA.FcQHMBelR2xWPMC7VgC1_-eVyiyq6MxkNa1Hs1Ugd8I"

    /// PyJWT of {sub: alice, exp: now+3600, pad: 6042 "x"}: 8192 bytes
    static let fitsPadLength = 6042
    static let fitsSignature = "bpqDQac3IU8i41hRC9RtBaeeTSi02gKSAaemCCJIh84"

    /// PyJWT of {sub: alice, exp: now+3600, pad: 6043 "x"}: 8193 bytes
    static let overPadLength = 6043
    static let overSignature = "6d_b1QDxIf5Bg23PpZq3uhc12b1SKubCMghmiVhYwgQ"
}
