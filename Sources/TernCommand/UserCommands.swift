import ArgumentParser
import Foundation
import MailPolicy
import TernService

/// `tern user`: the users of `[auth] passwd_file` (SPEC §2.4). The password is read from the
/// terminal without echo (twice), or as one line from standard input when that is not a
/// terminal — never from the command line, where `ps` and shell history would show it.
struct User: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage the users of [auth] passwd_file (Dovecot passwd-file format).",
        subcommands: [Add.self, Passwd.self, Delete.self])

    /// What `add` and `passwd` both take: the file, the hash scheme and the login.
    struct PasswordArguments: ParsableArguments {
        @OptionGroup var options: ConfigOption
        @Option(help: "Hash scheme: SHA512-CRYPT (default), SHA256-CRYPT or BLF-CRYPT.") var scheme = "SHA512-CRYPT"
        @Argument(help: "The login, usually the user's address (alice@example.com).") var user: String
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a user with a hashed password.")
        @OptionGroup var arguments: PasswordArguments

        func run() throws {
            try User.set(arguments, change: .add)
            print("user \(arguments.user.lowercased()) added")
        }
    }

    struct Passwd: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a new password for a user.")
        @OptionGroup var arguments: PasswordArguments

        func run() throws {
            try User.set(arguments, change: .changePassword)
            print("password of \(arguments.user.lowercased()) changed")
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a user.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "The login.") var user: String

        func run() throws {
            do {
                try UserAdministration.delete(user: user, configuration: try options.load())
            } catch let failure as UserAdministration.Failure {
                printError("tern user delete: \(failure)")
                throw ExitCode(1)
            }
            print("user \(user.lowercased()) deleted")
        }
    }

    static func set(_ arguments: PasswordArguments, change: UserAdministration.Change) throws {
        let configuration = try arguments.options.load()
        let (user, name) = (arguments.user, arguments.scheme)
        guard let scheme = PasswordHash.Scheme(rawValue: name.uppercased()), scheme != .plain, scheme != .crypt else {
            printError("tern user: unknown scheme \(name) (SHA512-CRYPT, SHA256-CRYPT or BLF-CRYPT)")
            throw ExitCode(64)
        }
        guard let password = readPassword() else {
            printError("tern user: no password given (type it at the prompt, or pipe one line on standard input)")
            throw ExitCode(1)
        }
        do {
            try UserAdministration.setPassword(
                user: user, password: password, scheme: scheme, change: change, configuration: configuration)
        } catch {
            printError("tern user: \(error)")
            throw ExitCode(1)
        }
    }

    /// Twice without echo from a terminal; one line otherwise.
    static func readPassword() -> String? {
        guard isatty(STDIN_FILENO) == 1 else {
            guard let line = Swift.readLine(strippingNewline: true) else { return nil }
            return line.hasSuffix("\r") ? String(line.dropLast()) : line
        }
        guard let first = prompt("Password: "), let second = prompt("Repeat password: ") else { return nil }
        guard first == second else {
            printError("tern user: the passwords differ")
            return nil
        }
        return first
    }

    static func prompt(_ text: String) -> String? {
        FileHandle.standardError.write(Data(text.utf8))
        var saved = termios()
        tcgetattr(STDIN_FILENO, &saved)
        var quiet = saved
        quiet.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet)
        defer {
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved)
            FileHandle.standardError.write(Data("\n".utf8))
        }
        return Swift.readLine(strippingNewline: true)
    }
}
