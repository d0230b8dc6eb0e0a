#!/usr/bin/python3
"""Regenerates the DKIM fixtures of DKIMVerifierTests: messages signed by dkimpy (Debian's
python3-dkim, with python3-nacl for Ed25519) and the key records they verify against.

Run from anywhere: /usr/bin/python3 Tests/MailPolicyTests/Fixtures/dkim/make-fixtures.py
Keys are made with openssl only when missing, so that rerunning keeps the records stable.
Every signature carries t=1767225600 (2026-01-01T00:00:00Z); the tests pass their own "now".
"""
import base64
import os
import subprocess
import time

import dkim
from dkim.crypto import parse_pem_private_key
from dkim.canonicalization import CanonicalizationPolicy

HERE = os.path.dirname(os.path.abspath(__file__))
T = 1767225600
time.time = lambda: T  # dkimpy writes t= from time.time()

DOMAIN = b"example.test"


def path(name):
    return os.path.join(HERE, name)


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_keys():
    if not os.path.exists(path("rsa2048.pem")):
        openssl("genrsa", "-traditional", "-out", path("rsa2048.pem"), "2048")
    if not os.path.exists(path("rsa2048-pkcs8.pem")):
        openssl("pkcs8", "-topk8", "-nocrypt", "-in", path("rsa2048.pem"), "-out", path("rsa2048-pkcs8.pem"))
    if not os.path.exists(path("rsa1024.pem")):
        openssl("genrsa", "-traditional", "-out", path("rsa1024.pem"), "1024")
    if not os.path.exists(path("rsa768.pem")):
        openssl("genrsa", "-traditional", "-out", path("rsa768.pem"), "768")
    if not os.path.exists(path("ed25519.pem")):
        openssl("genpkey", "-algorithm", "ed25519", "-out", path("ed25519.pem"))


def read(name):
    with open(path(name), "rb") as f:
        return f.read()


def rsa_public(name):
    """Base64 SubjectPublicKeyInfo, as opendkim-genkey publishes it."""
    der = subprocess.run(
        ["openssl", "rsa", "-in", path(name), "-pubout", "-outform", "DER"], check=True, capture_output=True
    ).stdout
    return base64.b64encode(der).decode()


def ed25519_seed_and_public():
    der = subprocess.run(
        ["openssl", "pkey", "-in", path("ed25519.pem"), "-outform", "DER"], check=True, capture_output=True
    ).stdout
    public = subprocess.run(
        ["openssl", "pkey", "-in", path("ed25519.pem"), "-pubout", "-outform", "DER"], check=True, capture_output=True
    ).stdout
    return base64.b64encode(der[-32:]), base64.b64encode(public[-32:]).decode()


MESSAGE = (
    b"Received: from client.example (client.example [192.0.2.1])\r\n"
    b"\tby mx.example.test; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
    b"From: Alice <alice@example.test>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: Lunch   on\r\n"
    b"  Friday?\r\n"
    b"Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n"
    b"Message-ID: <fixture@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Bob,  \r\n"
    b"\r\n"
    b"shall we meet \t at noon?\r\n"
    b" -- Alice\r\n"
    b"\r\n"
    b"\r\n"
)

HEADERS = [b"From", b"To", b"Subject", b"Date", b"Message-ID", b"MIME-Version", b"Content-Type", b"From"]


def sign(message, selector, key, canon, algorithm=b"rsa-sha256", identity=None, length=False):
    field = dkim.sign(
        message, selector, DOMAIN, key, identity=identity, canonicalize=canon, signature_algorithm=algorithm,
        include_headers=HEADERS, length=length)
    return field + message


def sign_expiring(message, selector, key, expires):
    """dkimpy's sign() has no x=; this is its body with x= added."""
    d = dkim.DKIM(message)
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    d.signature_algorithm = b"rsa-sha256"
    d.hasher = dkim.HASH_ALGORITHMS[b"rsa-sha256"]
    include = tuple(x.lower() for x in HEADERS)
    d.include_headers = include
    body = policy.canonicalize_body(d.body)
    bodyhash = base64.b64encode(d.hasher(body).digest())
    fields = [
        (b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", b"relaxed/relaxed"), (b"d", DOMAIN), (b"q", b"dns/txt"),
        (b"s", selector), (b"t", str(T).encode()), (b"x", str(expires).encode()), (b"h", b" : ".join(include)),
        (b"bh", bodyhash), (b"b", b"0" * 60),
    ]
    field = d.gen_header(fields, include, policy, b"DKIM-Signature", parse_pem_private_key(key))
    return b"DKIM-Signature: " + field + message


def main():
    make_keys()
    rsa = read("rsa2048.pem")
    seed, ed_public = ed25519_seed_and_public()
    relaxed, simple = b"relaxed", b"simple"
    fixtures = {
        "rsa-relaxed-relaxed.eml": sign(MESSAGE, b"s2048", rsa, (relaxed, relaxed)),
        "rsa-simple-simple.eml": sign(MESSAGE, b"s2048", rsa, (simple, simple)),
        "rsa-relaxed-simple.eml": sign(MESSAGE, b"s2048", rsa, (relaxed, simple)),
        "rsa-length.eml": sign(MESSAGE, b"s2048", rsa, (relaxed, relaxed), length=True),
        "rsa-identity.eml": sign(MESSAGE, b"s2048", rsa, (relaxed, relaxed), identity=b"alice@mail.example.test"),
        "rsa-weak.eml": sign(MESSAGE, b"weak", read("rsa768.pem"), (relaxed, relaxed)),
        "ed25519.eml": sign(MESSAGE, b"ed", seed, (relaxed, relaxed), algorithm=b"ed25519-sha256"),
        # The top signature is good; the one below was made with a key other than the one
        # published for its selector.
        "two-signatures.eml": sign(
            sign(MESSAGE, b"wrong", read("rsa1024.pem"), (relaxed, relaxed)), b"s2048", rsa, (relaxed, relaxed)),
        "expiring.eml": sign_expiring(MESSAGE, b"s2048", rsa, T + 3600),
    }
    for name, content in fixtures.items():
        with open(path(name), "wb") as f:
            f.write(content)
    records = [
        ("s2048._domainkey.example.test", "v=DKIM1; k=rsa; p=" + rsa_public("rsa2048.pem")),
        ("wrong._domainkey.example.test", "v=DKIM1; k=rsa; p=" + rsa_public("rsa2048.pem")),
        ("weak._domainkey.example.test", "v=DKIM1; k=rsa; p=" + rsa_public("rsa768.pem")),
        ("ed._domainkey.example.test", "v=DKIM1; k=ed25519; p=" + ed_public),
    ]
    with open(path("records.txt"), "w") as f:
        f.write("# <name> <TAB> <TXT record text>; written by make-fixtures.py\n")
        for name, text in records:
            f.write(f"{name}\t{text}\n")
    # Every fixture must verify with dkimpy itself against these records (weak and the lower
    # of two-signatures excepted), so that a failure in Swift is Tern's.
    table = {name.encode() + b".": text.encode() for name, text in records}
    dnsfunc = lambda name, timeout=5: table.get(name)
    for name, content in fixtures.items():
        if name in ("rsa-weak.eml",):
            continue
        assert dkim.verify(content, dnsfunc=dnsfunc), name


if __name__ == "__main__":
    main()
