import NIOCore
import NIOSSL
import Synchronization

/// The certificate check of one STARTTLS handshake. NIOSSL hands it the chain the server
/// presented (its own verification is replaced, RFC 7435 opportunistic TLS must not fail on a
/// bad certificate); the verdict is kept for the delivery's log, and refuses the handshake only
/// when the requirement says the certificate must verify (MTA-STS, DANE, `verify`).
final class PeerCertificateCheck: Sendable {
    let verifier: CertificateVerifier
    let hostName: String
    let requirement: TLSRequirement
    private let result = Mutex<CertificateVerdict?>(nil)

    init(verifier: CertificateVerifier, hostName: String, requirement: TLSRequirement) {
        self.verifier = verifier
        self.hostName = hostName
        self.requirement = requirement
    }

    /// The verdict once the handshake got as far as the certificate.
    var verdict: CertificateVerdict? { result.withLock { $0 } }

    /// NIOSSL's `customVerificationCallback`: runs on the event loop, answers from a task.
    func verify(_ certificates: [NIOSSLCertificate], promise: EventLoopPromise<NIOSSLVerificationResult>) {
        let chain = certificates.compactMap { try? $0.toDERBytes() }
        let complete = chain.count == certificates.count
        promise.completeWithTask {
            let verdict: CertificateVerdict
            if !complete {
                verdict = .untrusted("a certificate of the chain cannot be read")
            } else if case .dane(let records) = self.requirement.level {
                verdict = await self.verifier.verifyDANE(chain: chain, records: records, hostName: self.hostName)
            } else {
                verdict = await self.verifier.verifyPKIX(chain: chain, hostName: self.hostName)
            }
            self.result.withLock { $0 = verdict }
            return self.requirement.mustVerify && !verdict.isVerified ? .failed : .certificateVerified
        }
    }
}
