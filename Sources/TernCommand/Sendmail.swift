import ArgumentParser
import Foundation
import TernService

/// `tern sendmail [-t] [-f SENDER] [-i] [RECIPIENT...]` (SPEC §1.5): the interface programs
/// expect at /usr/sbin/sendmail. Its flags follow sendmail's own conventions (`-fSENDER`,
/// `-oi`, `-F name`, ignored `-o…` and `-B…`), so they are parsed here by hand.
struct Sendmail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submit a message from standard input (sendmail-compatible).")

    @Option(name: .long, help: "The configuration file (TOML).") var config: String?
    @Argument(
        parsing: .allUnrecognized,
        help: "sendmail flags (-t, -f SENDER, -i, -oi, -F NAME, --require-tls) and recipients.")
    var arguments: [String] = []

    func run() async throws {
        var sender: String?
        var fromHeaders = false
        var stopAtDot = true
        var requireTLS = false
        var recipients: [String] = []
        var index = 0
        var options = true
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard options, argument.hasPrefix("-"), argument.count > 1 else {
                recipients.append(argument)
                continue
            }
            switch argument {
            case "--": options = false
            // Tern's own: the message may only leave over verified TLS (RFC 8689 REQUIRETLS).
            case "--require-tls": requireTLS = true
            case "-t": fromHeaders = true
            case "-i", "-oi": stopAtDot = false
            case "-f", "-r", "-F", "-o", "-B", "-N", "-R", "-V", "-X", "-L":
                guard index < arguments.count else { throw ValidationError("\(argument) needs a value") }
                if argument == "-f" || argument == "-r" { sender = arguments[index] }
                index += 1
            default:
                if argument.hasPrefix("-f") || argument.hasPrefix("-r") {
                    sender = String(argument.dropFirst(2))
                } else if argument.hasPrefix("-o") || argument.hasPrefix("-F") || argument.hasPrefix("-B")
                    || argument.hasPrefix("-N") || argument.hasPrefix("-R") || argument.hasPrefix("-V")
                    || argument.hasPrefix("-X")
                    || argument.hasPrefix("-od") || argument.hasPrefix("-bm") || argument == "-U" || argument == "-v"
                {
                    continue
                } else {
                    throw ValidationError("unsupported sendmail option \(argument)")
                }
            }
        }
        guard fromHeaders || !recipients.isEmpty else {
            printError("tern sendmail: no recipients (give addresses, or -t to read them from the header)")
            throw ExitCode(64)
        }
        let loaded = try ConfigOption(config: config).load()
        let user = ProcessInfo.processInfo.environment["USER"] ?? NSUserName()
        if sender == "<>" { sender = "" }
        let message = LocalSubmission.readMessage(from: .standardInput, stopAtDot: stopAtDot)
        guard message.count <= loaded.limits.maxMessageSize else {
            printError("tern sendmail: message larger than max_message_size (\(loaded.limits.maxMessageSize) octets)")
            throw ExitCode(65)  // EX_DATAERR
        }
        let submission = LocalSubmission(
            sender: sender ?? "\(user)@\(loaded.hostname)", recipients: recipients, message: message,
            recipientsFromHeaders: fromHeaders, user: user, requireTLS: requireTLS)
        let response: ControlSocket.Response
        do {
            response = try await QueueAccess.perform(.init(op: .submit, submission: submission), configuration: loaded)
        } catch {
            printError("tern sendmail: \(error)")
            throw ExitCode(75)
        }
        guard response.ok else {
            printError("tern sendmail: \(response.error ?? "failed")")
            throw ExitCode(response.exitCode ?? 75)
        }
    }
}

extension ConfigOption {
    init(config: String?) {
        self.init()
        self.config = config
    }
}
