import Crypto
import Foundation
import MailMessage
import NIOCore
import SMTPProtocol

/// Signs one message with DKIM (RFC 6376 §5) as it streams past: relaxed/relaxed, SHA-256,
/// RSA or Ed25519 by the key. Feed `append` the message (header section, empty line, body) in
/// chunks of any size, then ask `signatureField` for the field to put on top of the message.
/// Only the header section is kept; the body is hashed as it goes.
public final class DKIMSigner {
    /// The fields signed when present (RFC 6376 §5.4.1's list, as Postfix sites sign them
    /// with OpenDKIM): the originator, recipients, subject, threading, MIME structure and the
    /// list fields a mailing list or RFC 8058 one-click unsubscribe depends on. Trace fields
    /// (Received, Return-Path) are left out: relays add them.
    public static let defaultSignedFields: [String] = [
        "From", "Sender", "Reply-To", "Subject", "Date", "Message-ID", "To", "Cc", "In-Reply-To", "References",
        "MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-ID", "Content-Description",
        "Resent-Date", "Resent-From", "Resent-Sender", "Resent-To", "Resent-Cc", "Resent-Message-ID",
        "List-Id", "List-Help", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Subscribe", "List-Post",
        "List-Owner", "List-Archive",
    ]
    /// RFC 5322 §2.1.1: lines of the generated field are at most 78 characters.
    static let lineLength = 78

    public let domain: String
    public let selector: String
    public let key: DKIMKey
    public let headers: [String]
    private var collector: HeaderSectionCollector
    private var bodyHash = DKIMBodyHash(.relaxed, limit: nil)
    private var bodyDigest: [UInt8]?

    /// - Parameters:
    ///   - domain: `d=`, the signing domain (`signatureField` throws when it is no domain name).
    ///   - selector: `s=`, under which the public key is published.
    ///   - headers: the names of the fields to sign when present; `From` is always signed, and
    ///     signed once more than it occurs so that no From can be added later (§8.15).
    ///   - headerLimit: the most header octets kept; longer makes `signatureField` throw.
    public init(
        domain: String, selector: String, key: DKIMKey, headers: [String] = DKIMSigner.defaultSignedFields,
        headerLimit: Int = SMTPLimits().headerSize
    ) {
        self.domain = domain.lowercased()
        self.selector = selector
        self.key = key
        self.headers = headers
        self.collector = HeaderSectionCollector(limit: headerLimit)
    }

    /// The next chunk of the message, in order.
    public func append(_ chunk: ByteBuffer) {
        guard let body = collector.append(chunk) else { return }
        bodyHash.append(body)
    }

    /// The message has ended: the complete `DKIM-Signature: ...\r\n` field, folded, to be
    /// prepended to the message. `now` becomes `t=`.
    public func signatureField(now: Date) throws(DKIMSigningError) -> String {
        guard DKIMSignature.isDomainName(domain, labels: 2) else { throw .invalidName("domain \(domain)") }
        guard DKIMSignature.isDomainName(selector, labels: 1) else { throw .invalidName("selector \(selector)") }
        collector.finish()
        guard !collector.overflowed else { throw .headerTooLong(limit: collector.limit) }
        if bodyDigest == nil { bodyDigest = bodyHash.finish().digest }
        let fields = HeaderField.split(headerSection: collector.headerSection)

        var spelling: [String: String] = [:]
        // RFC 5322 §3.6.8: a field name is printable ASCII without the colon; others cannot
        // name a field and would break the h= list.
        for name in headers + ["From"] where !name.isEmpty && name.utf8.allSatisfy({ $0 > 32 && $0 < 127 && $0 != 58 })
        {
            spelling[name.lowercased()] = spelling[name.lowercased()] ?? name
        }
        var signed = fields.compactMap { spelling[$0.name.lowercased()] }
        signed.append(spelling["from"]!)

        var writer = FoldingWriter(start: "DKIM-Signature:")
        writer.add(" v=1;")
        writer.add(" a=\(key.algorithm.rawValue);")
        writer.add(" c=relaxed/relaxed;")
        writer.add(" d=\(domain);")
        writer.add(" s=\(selector);")
        writer.add(" t=\(Int(now.timeIntervalSince1970));")
        for (index, name) in signed.enumerated() {
            writer.add((index == 0 ? " h=" : ":") + name + (index == signed.count - 1 ? ";" : ""))
        }
        writer.add(" bh=\(Data(bodyDigest!).base64EncodedString());")
        writer.add(" b=")
        let unsigned = writer.text

        let field = HeaderField(name: "DKIM-Signature", octets: Array(unsigned.utf8), valueStart: 15)
        let digest = DKIMHeaderHash.digest(
            fields: fields, signedFields: signed, canonicalization: .relaxed, signatureField: field, excluding: nil)
        let signature: [UInt8]
        do {
            signature = try key.sign(digest)
        } catch {
            throw .signing("\(error)")
        }
        // base64string allows FWS anywhere (§2.4); the b= value fills the remaining lines.
        var base64 = Substring(Data(signature).base64EncodedString())
        writer.addPieces(&base64)
        return writer.text + "\r\n"
    }
}

/// Builds a header field of lines no longer than `DKIMSigner.lineLength`, folding (CRLF TAB)
/// before a piece that would not fit (RFC 5322 §2.2.3).
private struct FoldingWriter {
    private(set) var text: String
    private var column: Int

    init(start: String) {
        text = start
        column = start.utf8.count
    }

    /// A piece that stays whole; a leading space is dropped when the piece moves to a new line.
    mutating func add(_ piece: String) {
        if column + piece.utf8.count > DKIMSigner.lineLength && column > 1 {
            let moved = piece.hasPrefix(" ") ? String(piece.dropFirst()) : piece
            text += "\r\n\t" + moved
            column = 1 + moved.utf8.count
        } else {
            text += piece
            column += piece.utf8.count
        }
    }

    /// Characters that may be split anywhere, filling lines to the limit.
    mutating func addPieces(_ characters: inout Substring) {
        while !characters.isEmpty {
            var room = DKIMSigner.lineLength - column
            if room <= 0 {
                text += "\r\n\t"
                column = 1
                room = DKIMSigner.lineLength - 1
            }
            let piece = characters.prefix(room)
            text += piece
            column += piece.utf8.count
            characters = characters.dropFirst(piece.count)
        }
    }
}

/// Why a message cannot be signed.
public enum DKIMSigningError: Error, Sendable, Hashable, CustomStringConvertible {
    case headerTooLong(limit: Int)
    /// The domain or selector is not a DNS name.
    case invalidName(String)
    case signing(String)

    public var description: String {
        switch self {
        case .invalidName(let what): "cannot sign with \(what): not a DNS name"
        case .headerTooLong(let limit): "header section longer than \(limit) octets"
        case .signing(let reason): reason
        }
    }
}
