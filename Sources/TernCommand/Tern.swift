import ArgumentParser
import Foundation
import Logging
import TernService

@main
struct Tern: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tern",
        abstract: "Tern, a mail transfer agent.",
        subcommands: [Serve.self, CheckConfig.self, Queue.self, User.self, DKIM.self, Sendmail.self])
}

/// `--config FILE`, shared by every subcommand; without it, the embedded default (SPEC §1.4).
struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "The configuration file (TOML). Default: the embedded default configuration.")
    var config: String?

    func load() throws -> TernConfiguration {
        guard let config else {
            return TernConfiguration.embeddedDefault(currentDirectory: FileManager.default.currentDirectoryPath)
        }
        do {
            return try TernConfiguration.load(contentsOf: config)
        } catch {
            for problem in error.problems { printError("\(config): \(problem)") }
            throw ExitCode(78)  // EX_CONFIG
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the mail server in the foreground, logging to stderr.")

    @OptionGroup var options: ConfigOption
    @Flag(name: .long, help: "Log debug detail too.") var verbose = false

    func run() async throws {
        let configuration = try options.load()
        let level: Logger.Level = verbose ? .debug : .info
        LoggingSystem.bootstrap { label in
            var handler = KeyValueLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "tern")
        logger.logLevel = level
        do {
            try await TernApplication.serve(configuration, logger: logger)
        } catch {
            logger.critical("cannot run", metadata: ["event": "fatal", "error": "\(error)"])
            throw ExitCode(75)
        }
    }
}

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a configuration file; print every problem with its key and line.")

    @Option(name: .long, help: "The configuration file to check.") var config: String

    func run() throws {
        do {
            _ = try TernConfiguration.load(contentsOf: config)
            print("\(config): ok")
        } catch {
            for problem in error.problems { print("\(config): \(problem)") }
            throw ExitCode(1)
        }
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
