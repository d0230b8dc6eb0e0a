import ArgumentParser
import Foundation
import MailPolicy

/// `tern dkim`: keys for signing outgoing mail (SPEC §1.2 `[[dkim]]`, RFC 6376).
struct DKIM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dkim", abstract: "Manage DKIM signing keys.", subcommands: [Keygen.self])

    struct Keygen: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Generate a signing key; print the DNS record to publish.",
            discussion: """
                Writes the private key (PEM, mode 0600, never over an existing file) and prints the \
                TXT record for <selector>._domainkey.<domain> in zone-file form.
                """)

        @Argument(help: "The signing domain (d=), e.g. example.com.") var domain: String
        @Argument(help: "The selector (s=), e.g. s2026.") var selector: String
        @Option(name: .long, help: "Key type: rsa or ed25519.") var type = "rsa"
        @Option(name: .long, help: "RSA key size: 2048, 3072 or 4096 (default 2048).") var bits: Int?
        @Option(name: .long, help: "Where to write the private key (default ./<selector>.<domain>.pem).")
        var output: String?

        func validate() throws {
            guard DKIMKey.KeyType(rawValue: type.lowercased()) != nil else {
                throw ValidationError("--type must be rsa or ed25519")
            }
            guard DKIMSignature.isDomainName(domain.lowercased(), labels: 2) else {
                throw ValidationError("not a domain name: \(domain)")
            }
            guard DKIMSignature.isDomainName(selector, labels: 1) else {
                throw ValidationError("not a selector (letters, digits, hyphens, dots): \(selector)")
            }
            if bits != nil && type.lowercased() == "ed25519" {
                throw ValidationError("--bits applies to RSA keys only")
            }
        }

        func run() throws {
            let domain = domain.lowercased()
            let path = output ?? "./\(selector).\(domain).pem"
            let key: DKIMKey
            do {
                key = try DKIMKey.generate(DKIMKey.KeyType(rawValue: type.lowercased())!, bits: bits ?? 2048)
            } catch {
                printError("tern dkim keygen: \(error)")
                throw ExitCode(64)
            }
            do {
                try Self.create(path, contents: key.pemRepresentation)
            } catch {
                printError("tern dkim keygen: \(error.reason)")
                throw ExitCode(73)  // EX_CANTCREAT
            }
            let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
            print(key.zoneFileRecord(selector: selector, domain: domain))
            print(
                """

                ; Private key written to \(absolute).
                ; Publish the record above, then add to the configuration:
                ;   [[dkim]]
                ;   domain = "\(domain)"
                ;   selector = "\(selector)"
                ;   private_key = "\(absolute)"
                """)
        }

        struct Failure: Error {
            var reason: String
        }

        /// Writes a new file atomically and never over an existing one: the key goes to a
        /// temporary file (0600, fsynced), which is then hard-linked to `path` — link(2) fails
        /// with EEXIST rather than replace — and removed; the directory is fsynced.
        static func create(_ path: String, contents: String) throws(Failure) {
            func failure(_ what: String) -> Failure { Failure(reason: "\(what): \(String(cString: strerror(errno)))") }
            if access(path, F_OK) == 0 { throw Failure(reason: "\(path) exists; not overwriting it") }
            let directory = (path as NSString).deletingLastPathComponent
            let temporary = "\(path).tmp.\(getpid())"
            let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw failure("cannot create \(temporary)") }
            defer { unlink(temporary) }
            let bytes = Array(contents.utf8)
            var offset = 0
            while offset < bytes.count {
                let written = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if written < 0, errno == EINTR { continue }
                guard written > 0 else {
                    let error = failure("cannot write \(temporary)")
                    close(fd)
                    throw error
                }
                offset += written
            }
            guard fsync(fd) == 0 else {
                let error = failure("cannot write \(temporary)")
                close(fd)
                throw error
            }
            close(fd)
            guard link(temporary, path) == 0 else {
                throw errno == EEXIST
                    ? Failure(reason: "\(path) exists; not overwriting it") : failure("cannot create \(path)")
            }
            let directoryFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if directoryFD >= 0 {
                fsync(directoryFD)
                close(directoryFD)
            }
        }
    }
}
