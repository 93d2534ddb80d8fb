import Foundation
import PackagePlugin

/// Embeds the package's `lua/*.lua` scripts and every file under `web/` into the target it is
/// applied to, as `LuaSources.byName` and `WebAssets.byPath`, so the binary runs from any
/// directory.
///
/// Every embedded file is an input of the build command, so editing one regenerates the tables
/// on the next build. The list is made when SwiftPM plans the build, which it does again only
/// when the manifest or a target's own files change: after adding or removing a file, touch
/// `Package.swift` (the Makefile's builds do, through `scripts/embedded.sh`). A missing `web/`
/// yields an empty table. Hidden files (a path component starting with ".") are left out, so
/// `.DS_Store` is never served.
@main
struct EmbedResources: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let luaDirectory = context.package.directoryURL.appending(path: "lua", directoryHint: .isDirectory)
        let webDirectory = context.package.directoryURL.appending(path: "web", directoryHint: .isDirectory)
        let luaFiles = try Self.files(in: luaDirectory, recursive: false).filter { $0.pathExtension == "lua" }
        let webFiles = try Self.files(in: webDirectory, recursive: true)
        let luaOutput = context.pluginWorkDirectoryURL.appending(path: "LuaSources.swift")
        let webOutput = context.pluginWorkDirectoryURL.appending(path: "WebAssets.swift")

        var arguments = [
            "--lua-output", luaOutput.path(percentEncoded: false),
            "--web-output", webOutput.path(percentEncoded: false),
            "--web-root", webDirectory.path(percentEncoded: false),
        ]
        for file in luaFiles { arguments += ["--lua", file.path(percentEncoded: false)] }
        for file in webFiles { arguments += ["--web", file.path(percentEncoded: false)] }

        return [
            .buildCommand(
                displayName: "Embedding the Lua scripts and web client into \(target.name)",
                executable: try context.tool(named: "embed-resources").url,
                arguments: arguments,
                inputFiles: luaFiles + webFiles,
                outputFiles: [luaOutput, webOutput]
            )
        ]
    }

    /// The regular files below `directory`, sorted by path; none if it does not exist.
    private static func files(in directory: URL, recursive: Bool) throws -> [URL] {
        let fileManager = FileManager.default
        let root = directory.path(percentEncoded: false)
        var isDirectory: ObjCBool = false
        guard fileManager.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
            return []
        }
        let paths = recursive ? try fileManager.subpathsOfDirectory(atPath: root) : try fileManager.contentsOfDirectory(atPath: root)
        return paths.sorted().compactMap { path in
            if path.split(separator: "/").contains(where: { $0.hasPrefix(".") }) { return nil }
            let file = directory.appending(path: path, directoryHint: .notDirectory)
            var isDirectory: ObjCBool = false
            guard fileManager.fileExists(atPath: file.path(percentEncoded: false), isDirectory: &isDirectory), !isDirectory.boolValue else {
                return nil
            }
            return file
        }
    }
}
