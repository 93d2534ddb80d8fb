import Foundation
import TestSupport
import Testing

@testable import Relay

@Suite("Web client files", .timeLimit(.minutes(2)))
struct WebClientTests {
    @Test func everyEmbeddedFileIsServedAtItsPathWithoutAToken() async throws {
        #expect(WebAssets.byPath["/index.html"] != nil, "web/index.html is embedded")
        try await withRelay { relay in
            for (path, asset) in WebAssets.byPath {
                let response = try await relay.request("GET", path)
                #expect(response.status == 200, "\(response)")
                #expect(response.body == asset.bytes, "\(path): the embedded bytes")
                #expect(response.headers["content-type"] == asset.contentType, "\(path)")
                #expect(response.headers["etag"] == asset.etag, "\(path)")
                #expect(response.headers["cache-control"] == "no-cache", "\(path)")
            }
        }
    }

    @Test func theRootIsTheIndexPage() async throws {
        let index = try #require(WebAssets.byPath["/index.html"])
        try await withRelay { relay in
            let response = try await relay.request("GET", "/")
            #expect(response.status == 200)
            #expect(response.headers["content-type"] == "text/html; charset=utf-8")
            #expect(response.body == index.bytes)

            let head = try await relay.request("HEAD", "/")
            #expect(head.status == 200)
            #expect(head.headers["content-length"] == String(index.bytes.count))
            #expect(head.body.isEmpty)
        }
    }

    @Test func aMatchingETagIsAnsweredNotModified() async throws {
        let index = try #require(WebAssets.byPath["/index.html"])
        try await withRelay { relay in
            let cached = try await relay.request("GET", "/", headers: ["If-None-Match": index.etag])
            #expect(cached.status == 304)
            #expect(cached.body.isEmpty)
            #expect(cached.headers["etag"] == index.etag)

            let listed = try await relay.request("GET", "/", headers: ["If-None-Match": "\"0000000000000000\", W/\(index.etag)"])
            #expect(listed.status == 304)

            let stale = try await relay.request("GET", "/", headers: ["If-None-Match": "\"0000000000000000\""])
            #expect(stale.status == 200)
            #expect(stale.body == index.bytes)
        }
    }

    @Test func pathsOutsideTheClientAreStillAPINotFound() async throws {
        try await withRelay { relay in
            for path in ["/index.htm", "/no-such-file.js", "/../Package.swift", "/%2e%2e/lua/send.lua"] {
                expectError(try await relay.request("GET", path), 404, "not_found")
            }
        }
    }

    @Test func ifNoneMatchComparesWeakly() {
        let etag = "\"0123456789abcdef\""
        #expect(WebRoutes.matches(etag, etag))
        #expect(WebRoutes.matches("W/\(etag)", etag))
        #expect(WebRoutes.matches("\"x\" ,\t\(etag) ", etag))
        #expect(WebRoutes.matches("*", etag))
        #expect(!WebRoutes.matches("\"x\"", etag))
        #expect(!WebRoutes.matches("0123456789abcdef", etag))
        #expect(!WebRoutes.matches("", etag))
    }
}
