import Foundation
import Hummingbird

/// Reading and checking what a request carries: bodies, path ids, query numbers.
struct RequestParsing: Sendable {
    let limits: RelayLimits

    private static let malformed = "malformed JSON body (strict JSON: valid UTF-8, no key twice)"
    private static let notAnObject = "the body must be a JSON object"

    /// Decodes a JSON body of at most `maxBodyBytes`.
    ///
    /// - Throws: `too_large` over the limit, `bad_request` for anything that is not the expected
    ///   JSON (strict: see ``StrictJSON``; no key twice, valid UTF-8).
    func decode<T: Decodable>(_ type: T.Type, from request: Request) async throws -> T {
        let buffer = try await self.body(of: request)
        guard StrictJSON.isValid(buffer.readableBytesView) else { throw APIError.badRequest(Self.malformed) }
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView))
        } catch let error as DecodingError {
            throw APIError.badRequest(Self.describe(error))
        } catch {
            throw APIError.badRequest("malformed JSON body")
        }
    }

    /// A JSON object body of at most `maxBodyBytes`, parsed by ``StrictJSON`` alone (the hot
    /// paths skip Foundation's decoder).
    ///
    /// - Throws: `too_large` over the limit, `bad_request` for anything but a strict JSON object.
    func object(from request: Request) async throws -> StrictJSON.Value {
        let buffer = try await self.body(of: request)
        guard let value = StrictJSON.parse(buffer.readableBytesView) else { throw APIError.badRequest(Self.malformed) }
        guard case .object = value else { throw APIError.badRequest(Self.notAnObject) }
        return value
    }

    /// The request's body, of at most `maxBodyBytes`: one whose `Content-Length` says more is
    /// refused before any of it is read (a client that sent `Expect: 100-continue` has its
    /// answer at once, not after a wait or an upload).
    private func body(of request: Request) async throws -> ByteBuffer {
        if self.limits.announcesTooLargeBody(request) {
            throw APIError(.tooLarge, "request body is over \(self.limits.maxBodyBytes) bytes")
        }
        var request = request
        do {
            return try await request.collectBody(upTo: self.limits.maxBodyBytes)
        } catch let error as any HTTPResponseError {
            // Over the limit as it came in: 413.
            throw error
        } catch {
            // Cut short (the client went away) or malformed (a bad chunk): the client's fault,
            // and no answer can reach it on a broken connection; counted as 400, not 500.
            throw APIError.badRequest("the request body could not be read: cut short or malformed")
        }
    }

    /// The string field `name` of a body object.
    ///
    /// - Throws: `bad_request` if it is missing or not a string.
    func string(_ name: String, in object: StrictJSON.Value) throws -> String {
        guard let field = object[name] else { throw APIError.badRequest("missing field \(name)") }
        guard let text = field.string else { throw APIError.badRequest("wrong type for \(name)") }
        return text
    }

    /// A `client_msg_id`: 1 to `maxClientMessageIDBytes` bytes of UTF-8 (it becomes part of a
    /// Redis key name, so bytes count, not characters).
    func clientMessageID(_ value: String) throws -> String {
        let bytes = value.utf8.count
        guard bytes >= 1, bytes <= self.limits.maxClientMessageIDBytes else {
            throw APIError.badRequest("client_msg_id must be 1 to \(self.limits.maxClientMessageIDBytes) bytes of UTF-8")
        }
        return value
    }

    /// A path parameter that must be an id.
    func id(_ name: String, in context: RelayRequestContext) throws -> String {
        guard let value = Self.pathParameter(name, in: context), Identifier.isValid(value) else {
            throw APIError.badRequest("\(name): \(Identifier.rule)")
        }
        return value
    }

    /// A path parameter, percent-decoded (RFC 3986 section 6.2.2.2: `%67%31` is `g1`); nil if
    /// absent or not valid percent-encoding.
    static func pathParameter(_ name: String, in context: RelayRequestContext) -> String? {
        guard let raw = context.parameters.get(name) else { return nil }
        return raw.contains("%") ? raw.removingPercentEncoding : raw
    }

    /// Checks an id from a body.
    func id(_ value: String, field: String) throws -> String {
        guard Identifier.isValid(value) else {
            throw APIError.badRequest("\(field): \(Identifier.rule)")
        }
        return value
    }

    /// A query parameter, if present.
    ///
    /// - Throws: `bad_request` if it is given more than once (which one would count is no
    ///   clearer than for a JSON key given twice).
    func query(_ name: String, in request: Request) throws -> String? {
        let values = request.uri.queryParameters.getAll(name)
        guard values.count <= 1 else { throw APIError.badRequest("\(name) is given \(values.count) times: give it once") }
        return values.first
    }

    /// A query parameter that must be a whole number in `range`, if present, written as one:
    /// decimal digits, no `+`, no leading zero (`+5` and `05` are refused, as `5.0` is).
    func integer(_ name: String, in request: Request, range: ClosedRange<Int64>) throws -> Int64? {
        guard let text = try self.query(name, in: request) else { return nil }
        guard let value = Int64(text), String(value) == text, range.contains(value) else {
            throw APIError.badRequest("\(name) must be an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    /// A message text: not empty, at most `maxTextBytes` of UTF-8.
    func text(_ text: String) throws -> String {
        guard !text.isEmpty else { throw APIError.badRequest("text must not be empty") }
        guard text.utf8.count <= self.limits.maxTextBytes else {
            throw APIError(.tooLarge, "text is over \(self.limits.maxTextBytes) bytes")
        }
        return text
    }

    private static func describe(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound(let key, let context): "missing field \(Self.path(context.codingPath + [key]))"
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            context.codingPath.isEmpty ? Self.notAnObject : "wrong type for \(Self.path(context.codingPath))"
        case .dataCorrupted(let context) where !context.codingPath.isEmpty:
            "bad value for \(Self.path(context.codingPath))"
        default: "malformed JSON body"
        }
    }

    /// A field's path as a client writes it: `members[0]`, `a.b`.
    private static func path(_ codingPath: [any CodingKey]) -> String {
        codingPath.enumerated().map { index, key in
            if let position = key.intValue { return "[\(position)]" }
            return index == 0 ? key.stringValue : ".\(key.stringValue)"
        }.joined()
    }
}

extension RelayLimits {
    /// Whether `request`'s `Content-Length` says more than ``maxBodyBytes``: such a body is
    /// refused unread (413), and its connection ends after the answer.
    func announcesTooLargeBody(_ request: Request) -> Bool {
        self.isTooLargeBody(contentLength: request.headers[.contentLength])
    }

    /// Whether a `Content-Length` of `value` says more than ``maxBodyBytes``.
    func isTooLargeBody(contentLength value: String?) -> Bool {
        value.flatMap { Int($0) }.map { $0 > self.maxBodyBytes } ?? false
    }
}
