import Foundation
import Hummingbird
import Logging

/// Turns every error into the API's error body, and counts every response by route and status.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = RelayRequestContext
    let metrics: RelayMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let response: Response
        do {
            response = try await next(request, context)
        } catch {
            let apiError = APIError(from: error)
            if apiError.code == .internal {
                context.logger.error("request failed", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            }
            var answer =
                (try? Response.json(encoding: apiError.body, status: apiError.code.status)) ?? Response(status: apiError.code.status)
            if let seconds = apiError.retryAfter {
                answer.headers[.retryAfter] = String(seconds)
                // For a web page calling the API (CORS exposes it on the answer itself).
                answer.headers[.accessControlExposeHeaders] = "Retry-After"
            }
            response = answer
        }
        self.metrics.request(route: context.endpointPath ?? "unmatched", method: request.method.rawValue, status: response.status.code)
        return response
    }
}

extension Response {
    /// A JSON response encoding `value`.
    static func json(encoding value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        // Sorted: Foundation on Linux writes keys in no fixed order, and equal answers must be equal bytes.
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(value)
        return Response(
            status: status,
            headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(bytes: data))
        )
    }

    /// A JSON response whose body is already JSON text.
    static func json(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status,
            headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(string: text))
        )
    }
}
