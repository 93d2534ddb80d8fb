// Writes the Swift sources that embed the Redis scripts and the web client into the `Relay`
// module, so the binary runs from any directory. The EmbedResources plugin runs it on every
// build whose inputs changed:
//
//     embed-resources --lua-output FILE --web-output FILE --web-root DIR [--lua FILE]... [--web FILE]...
//
// `--lua` files become `LuaSources.byName`, keyed by file name without the extension; `--web`
// files (all below `--web-root`) become `WebAssets.byPath`, keyed by their path below the root
// with a leading "/". The output depends only on the files' names and bytes, and a file whose
// content would not change is left untouched, so a rebuild recompiles nothing it need not.

import Foundation

/// A failure that stops the build, with a message for the build log.
struct EmbedError: Error, CustomStringConvertible {
    let description: String
}

/// The command line.
struct Arguments {
    var luaOutput: String?
    var webOutput: String?
    var webRoot: String?
    var luaFiles: [String] = []
    var webFiles: [String] = []

    init(_ arguments: some Sequence<String>) throws {
        var iterator = arguments.makeIterator()
        while let option = iterator.next() {
            guard let value = iterator.next() else {
                throw EmbedError(description: "\(option) needs a value")
            }
            switch option {
            case "--lua-output": self.luaOutput = value
            case "--web-output": self.webOutput = value
            case "--web-root": self.webRoot = value
            case "--lua": self.luaFiles.append(value)
            case "--web": self.webFiles.append(value)
            default: throw EmbedError(description: "unknown option \(option)")
            }
        }
    }
}

/// One embedded file: its key in the generated table and its exact bytes.
struct EmbeddedFile {
    let key: String
    let bytes: [UInt8]
}

// MARK: - Swift literals

/// Spells values as Swift literals that evaluate to exactly the given text, byte for byte.
enum SwiftLiteral {
    /// A raw multi-line literal when the text allows one (readable, diff-friendly); otherwise an
    /// escaped single-line literal.
    ///
    /// A multi-line literal turns CR and CRLF into LF, and the lexer refuses some control
    /// characters, so text containing any control character but tab and LF is escaped instead.
    static func string(_ text: String) -> String {
        let hasUnsafeScalar = text.unicodeScalars.contains { scalar in
            scalar.value < 0x20 && scalar != "\t" && scalar != "\n" || scalar.value == 0x7F
        }
        return hasUnsafeScalar ? escaped(text) : multilineRaw(text)
    }

    /// `#"""` … `"""#` with content and delimiters at column 0, so no indentation is stripped.
    ///
    /// The literal's value drops the line break before the closing delimiter, so one is added
    /// after the text: a text ending in "\n" keeps it, a text without one gains none.
    static func multilineRaw(_ text: String) -> String {
        let hashes = String(repeating: "#", count: delimiterLength(for: text))
        return "\(hashes)\"\"\"\n\(text)\n\"\"\"\(hashes)"
    }

    /// A raw literal ends at `"` and escapes begin at `\` only when followed by as many `#` as
    /// its delimiter has; one more `#` than the longest such run in the text makes both inert.
    static func delimiterLength(for text: String) -> Int {
        var longest = 0
        var run: Int?
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                run = 0
            case UInt8(ascii: "#"):
                if let count = run {
                    run = count + 1
                    longest = max(longest, count + 1)
                }
            default:
                run = nil
            }
        }
        return longest + 1
    }

    /// `"…"` with every character that could end or alter the literal escaped.
    static func escaped(_ text: String) -> String {
        var literal = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": literal += "\\\""
            case "\\": literal += "\\\\"
            case "\n": literal += "\\n"
            case "\r": literal += "\\r"
            case "\t": literal += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                literal += "\\u{" + String(scalar.value, radix: 16) + "}"
            default: literal.unicodeScalars.append(scalar)
            }
        }
        return literal + "\""
    }

    /// Base64 in lines of 76 characters inside a multi-line literal (the alphabet holds no `"`
    /// or `\`), for bytes that are not UTF-8 text.
    static func base64(_ bytes: [UInt8]) -> String {
        let encoded = Data(bytes).base64EncodedString()
        var lines: [Substring] = []
        var start = encoded.startIndex
        while start < encoded.endIndex {
            let end = encoded.index(start, offsetBy: 76, limitedBy: encoded.endIndex) ?? encoded.endIndex
            lines.append(encoded[start..<end])
            start = end
        }
        return "\"\"\"\n" + lines.joined(separator: "\n") + "\n\"\"\""
    }
}

// MARK: - Web assets

enum WebAssetMetadata {
    /// The `Content-Type` for a file name's extension; `application/octet-stream` when unknown.
    static func contentType(forPath path: String) -> String {
        switch URL(fileURLWithPath: path).pathExtension.lowercased() {
        case "html", "htm": return "text/html; charset=utf-8"
        case "js", "mjs": return "text/javascript; charset=utf-8"
        case "css": return "text/css; charset=utf-8"
        case "txt": return "text/plain; charset=utf-8"
        case "md": return "text/markdown; charset=utf-8"
        case "xml": return "application/xml"
        case "json", "map": return "application/json"
        case "webmanifest": return "application/manifest+json"
        case "wasm": return "application/wasm"
        case "svg": return "image/svg+xml"
        case "png": return "image/png"
        case "jpg", "jpeg": return "image/jpeg"
        case "gif": return "image/gif"
        case "webp": return "image/webp"
        case "avif": return "image/avif"
        case "ico": return "image/x-icon"
        case "woff": return "font/woff"
        case "woff2": return "font/woff2"
        case "ttf": return "font/ttf"
        case "otf": return "font/otf"
        default: return "application/octet-stream"
        }
    }

    /// A strong ETag, quotes included: the 64-bit FNV-1a hash of the bytes in hex. Content
    /// addressed, so it changes exactly when the file does and is the same on every build.
    static func etag(for bytes: [UInt8]) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return "\"" + String(repeating: "0", count: 16 - hex.count) + hex + "\""
    }
}

// MARK: - Generated sources

/// The text, if the bytes are valid UTF-8: decoding repairs invalid input, so it must round-trip.
func utf8Text(_ bytes: [UInt8]) -> String? {
    let text = String(decoding: bytes, as: UTF8.self)
    return text.utf8.elementsEqual(bytes) ? text : nil
}

let header = "// Generated by embed-resources (Plugins/EmbedResources) at build time; edits are overwritten.\n"

func luaSource(_ files: [EmbeddedFile]) throws -> String {
    var entries = ""
    for file in files {
        guard let text = utf8Text(file.bytes) else {
            throw EmbedError(description: "lua/\(file.key).lua is not UTF-8 text")
        }
        entries += "        \(SwiftLiteral.escaped(file.key)): \(SwiftLiteral.string(text)),\n"
    }
    let table = files.isEmpty ? "[:]" : "[\n\(entries)    ]"
    return header + """

        /// The Redis scripts of `lua/`, embedded at build time.
        enum LuaSources {
            /// Each script's source by file name without the extension ("send" for `lua/send.lua`).
            static let byName: [String: String] = \(table)
        }

        """
}

func webSource(_ files: [EmbeddedFile]) -> String {
    var entries = ""
    for file in files {
        let body: String
        if let text = utf8Text(file.bytes) {
            body = "text: \(SwiftLiteral.string(text))"
        } else {
            body = "base64: \(SwiftLiteral.base64(file.bytes))"
        }
        entries += "        \(SwiftLiteral.escaped(file.key)): WebAsset(\n"
        entries += "            contentType: \(SwiftLiteral.escaped(WebAssetMetadata.contentType(forPath: file.key))),\n"
        entries += "            etag: \(SwiftLiteral.escaped(WebAssetMetadata.etag(for: file.bytes))),\n"
        entries += "            \(body)\n"
        entries += "        ),\n"
    }
    let table = files.isEmpty ? "[:]" : "[\n\(entries)    ]"
    return header + """

        /// A file of the web client, embedded at build time.
        struct WebAsset: Sendable {
            /// The `Content-Type` header value, from the file name's extension.
            let contentType: String
            /// A strong validator for the `ETag` header, quotes included; it changes exactly when the bytes do.
            let etag: String
            /// The file's bytes, exactly as in `web/`.
            let bytes: [UInt8]
        }

        /// The files of `web/`, embedded at build time.
        enum WebAssets {
            /// Each file by its path below `web/` with a leading "/" ("/index.html"). The table is
            /// built once, at first use.
            static let byPath: [String: WebAsset] = \(table)
        }

        extension WebAsset {
            fileprivate init(contentType: String, etag: String, text: String) {
                self.init(contentType: contentType, etag: etag, bytes: Array(text.utf8))
            }

            /// For a file that is not UTF-8 text, embedded as base64 in lines.
            fileprivate init(contentType: String, etag: String, base64: String) {
                var bytes: [UInt8] = []
                bytes.reserveCapacity(base64.utf8.count / 4 * 3)
                var group: UInt32 = 0
                var count = 0
                for character in base64.utf8 {
                    let value: UInt8
                    switch character {
                    case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = character - UInt8(ascii: "A")
                    case UInt8(ascii: "a")...UInt8(ascii: "z"): value = character - UInt8(ascii: "a") + 26
                    case UInt8(ascii: "0")...UInt8(ascii: "9"): value = character - UInt8(ascii: "0") + 52
                    case UInt8(ascii: "+"): value = 62
                    case UInt8(ascii: "/"): value = 63
                    case UInt8(ascii: "\\n"), UInt8(ascii: "="): continue
                    default: preconditionFailure("embed-resources wrote a character outside base64")
                    }
                    group = group << 6 | UInt32(value)
                    count += 1
                    if count == 4 {
                        bytes.append(UInt8(truncatingIfNeeded: group >> 16))
                        bytes.append(UInt8(truncatingIfNeeded: group >> 8))
                        bytes.append(UInt8(truncatingIfNeeded: group))
                        group = 0
                        count = 0
                    }
                }
                if count == 2 {
                    bytes.append(UInt8(truncatingIfNeeded: group >> 4))
                } else if count == 3 {
                    bytes.append(UInt8(truncatingIfNeeded: group >> 10))
                    bytes.append(UInt8(truncatingIfNeeded: group >> 2))
                }
                self.init(contentType: contentType, etag: etag, bytes: bytes)
            }
        }

        """
}

// MARK: - Files

func readFile(_ path: String) throws -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw EmbedError(description: "cannot read \(path)")
    }
    return [UInt8](data)
}

/// Writes `text` unless the file already holds it, so an unchanged table is not recompiled.
func write(_ text: String, to path: String) throws {
    let data = Data(text.utf8)
    if FileManager.default.contents(atPath: path) == data { return }
    try data.write(to: URL(fileURLWithPath: path), options: .atomic)
}

/// Drops trailing slashes so that `root + "/"` is a prefix of every file below it.
func trimmingTrailingSlashes(_ path: String) -> String {
    var path = Substring(path)
    while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
    return String(path)
}

func run() throws {
    let arguments = try Arguments(CommandLine.arguments.dropFirst())
    guard let luaOutput = arguments.luaOutput, let webOutput = arguments.webOutput else {
        throw EmbedError(
            description: "usage: embed-resources --lua-output FILE --web-output FILE --web-root DIR [--lua FILE]... [--web FILE]..."
        )
    }

    var luaFiles: [EmbeddedFile] = []
    for path in arguments.luaFiles {
        let name = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        luaFiles.append(EmbeddedFile(key: name, bytes: try readFile(path)))
    }

    var webFiles: [EmbeddedFile] = []
    if !arguments.webFiles.isEmpty {
        guard let webRoot = arguments.webRoot else { throw EmbedError(description: "--web needs --web-root") }
        let prefix = trimmingTrailingSlashes(webRoot) + "/"
        for path in arguments.webFiles {
            guard path.hasPrefix(prefix), path.count > prefix.count else {
                throw EmbedError(description: "\(path) is not below \(prefix)")
            }
            webFiles.append(EmbeddedFile(key: "/" + path.dropFirst(prefix.count), bytes: try readFile(path)))
        }
    }

    for (files, what) in [(luaFiles, "script"), (webFiles, "web file")] {
        let keys = files.map(\.key)
        if let duplicate = Dictionary(grouping: keys, by: { $0 }).first(where: { $0.value.count > 1 })?.key {
            throw EmbedError(description: "two \(what)s share the name \(duplicate)")
        }
    }

    // Sorted by key so the output, and so the build, is the same whatever order the files came in.
    try write(try luaSource(luaFiles.sorted { $0.key < $1.key }), to: luaOutput)
    try write(webSource(webFiles.sorted { $0.key < $1.key }), to: webOutput)
}

do {
    try run()
} catch {
    FileHandle.standardError.write(Data("embed-resources: error: \(error)\n".utf8))
    exit(1)
}
