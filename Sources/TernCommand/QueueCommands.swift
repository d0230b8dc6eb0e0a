import ArgumentParser
import Foundation
import TernService

struct Queue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect and control the mail queue (works while the server runs).",
        subcommands: [List.self, Show.self, Delete.self, Flush.self, Hold.self, Release.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One entry per queued message, with each recipient's state.")
        @OptionGroup var options: ConfigOption
        @Flag(name: .long, help: "Print a JSON array.") var json = false

        func run() async throws {
            let response = try await perform(.init(op: .list), options)
            let listings = response.listings ?? []
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(listings), as: UTF8.self))
            } else {
                print(QueueAdministration.format(listings), terminator: "")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The envelope and header of one message.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "Queue ID.") var id: String

        func run() async throws {
            print(try await perform(.init(op: .show, ids: [id]), options).output ?? "", terminator: "")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove messages from the queue without delivering them.")
        @OptionGroup var options: ConfigOption
        @Flag(name: .long, help: "Delete every message.") var all = false
        @Argument(help: "Queue IDs.") var ids: [String] = []

        func validate() throws {
            guard all != !ids.isEmpty else { throw ValidationError("give queue IDs or --all") }
        }

        func run() async throws {
            let request = all ? ControlSocket.Request(op: .deleteAll) : .init(op: .delete, ids: ids)
            let count = try await perform(request, options).count ?? 0
            print("\(count) message\(count == 1 ? "" : "s") deleted")
        }
    }

    struct Flush: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Retry deferred messages now.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "Queue IDs (default: all).") var ids: [String] = []

        func run() async throws {
            _ = try await perform(.init(op: .flush, ids: ids), options)
        }
    }

    struct Hold: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Keep messages in the queue until released.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "Queue IDs.") var ids: [String]

        func run() async throws {
            _ = try await perform(.init(op: .hold, ids: ids), options)
        }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Let held messages go.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "Queue IDs.") var ids: [String]

        func run() async throws {
            _ = try await perform(.init(op: .release, ids: ids), options)
        }
    }
}

/// Sends `request` to the running server, or, when none runs, carries it out on the queue
/// directly. Failures print the server's reason and exit with its sysexits code.
func perform(_ request: ControlSocket.Request, _ options: ConfigOption) async throws -> ControlSocket.Response {
    let configuration = try options.load()
    let response: ControlSocket.Response
    do {
        response = try await QueueAccess.perform(request, configuration: configuration)
    } catch {
        printError("tern: \(error)")
        throw ExitCode(75)
    }
    guard response.ok else {
        printError("tern: \(response.error ?? "failed")")
        throw ExitCode(response.exitCode ?? 1)
    }
    return response
}
