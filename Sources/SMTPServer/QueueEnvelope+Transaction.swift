import MailQueue
import SMTPProtocol

extension QueueEnvelope {
    /// The queue's envelope for a finished transaction: one queued recipient per delivery
    /// target (aliases already expanded), each remembering the RCPT it came from (RFC 3461 ORCPT).
    init(
        transaction: SMTPServerSession.Transaction, clientAddress: String?, heloName: String?,
        authenticatedUser: String? = nil
    ) {
        var seen = Set<String>()
        var recipients: [QueuedRecipient] = []
        for accepted in transaction.recipients {
            let original =
                accepted.parameters.originalRecipient.map { "\($0.addressType);\($0.address)" }
                ?? "rfc822;\(accepted.path)"
            for target in accepted.deliverTo where seen.insert(target.lowercased()).inserted {
                recipients.append(
                    QueuedRecipient(
                        address: target, originalRecipient: original,
                        notify: accepted.parameters.notify?.rawValue))
            }
        }
        self.init(
            sender: transaction.sender.description, recipients: recipients,
            bodyType: transaction.parameters.body?.rawValue, smtpUTF8: transaction.parameters.smtpUTF8,
            dsnReturn: transaction.parameters.ret?.rawValue, envelopeID: transaction.parameters.envelopeID,
            clientAddress: clientAddress, heloName: heloName, authenticatedUser: authenticatedUser,
            requireTLS: transaction.parameters.requireTLS)
    }
}
