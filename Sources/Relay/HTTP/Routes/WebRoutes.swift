import Hummingbird

/// The web client: every file of `web/` at its own path (`web/app.js` at `/app.js`), `index.html` also at `/`.
///
/// The files are embedded in the binary, so the relay serves them from any directory. Responses
/// carry a strong `ETag` and `Cache-Control: no-cache`: a browser revalidates each load and gets
/// `304 Not Modified` until a new build changes the file.
struct WebRoutes: Sendable {
    let assets: [String: WebAsset]

    init(assets: [String: WebAsset] = WebAssets.byPath) {
        self.assets = assets
    }

    func register(on router: some RouterMethods<RelayRequestContext>) {
        for (path, asset) in self.assets {
            let handler = Self.serve(asset)
            router.get(RouterPath(path), use: handler)
            router.head(RouterPath(path), use: handler)
            if path == "/index.html" {
                router.get("/", use: handler)
                router.head("/", use: handler)
            }
        }
    }

    static func serve(_ asset: WebAsset) -> @Sendable (Request, RelayRequestContext) async throws -> Response {
        let body = ByteBuffer(bytes: asset.bytes)
        return { request, _ in
            var headers: HTTPFields = [.eTag: asset.etag, .cacheControl: "no-cache"]
            if let validators = request.headers[.ifNoneMatch], Self.matches(validators, asset.etag) {
                return Response(status: .notModified, headers: headers)
            }
            headers[.contentType] = asset.contentType
            headers[.contentLength] = String(body.readableBytes)
            if request.method == .head { return Response(status: .ok, headers: headers) }
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: body))
        }
    }

    /// Whether an `If-None-Match` value names `etag` (weak comparison, as RFC 9110 asks for it).
    static func matches(_ validators: String, _ etag: String) -> Bool {
        validators.split(separator: ",").contains { candidate in
            var candidate = candidate.drop { $0 == " " || $0 == "\t" }
            while candidate.last == " " || candidate.last == "\t" { candidate = candidate.dropLast() }
            if candidate == "*" { return true }
            if candidate.hasPrefix("W/") { candidate = candidate.dropFirst(2) }
            return candidate == etag
        }
    }
}
