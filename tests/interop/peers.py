#!/usr/bin/env python3
"""The far side of outbound delivery for interop tests: fake SMTP servers and a DNS server.

`FakeSMTPServer` plays a scripted receiving MTA on a loopback address, with STARTTLS (Python's
ssl) when given a certificate. All of 127.0.0.0/8 is local on Linux, so several fake MX hosts can
share one port number on 127.0.0.2, 127.0.0.3, ...
`DNS` answers MX, A, AAAA, CNAME, TXT and TLSA queries from a table, like the recursive resolver
Tern is configured with, and sets the AD bit on the names it is told are DNSSEC-validated. (dnsmasq can serve a null MX, but it gives no SOA with negative answers and
cannot fail one chosen name with SERVFAIL, so this is a small DNS server written here.)
Only the Python standard library is used. `python3 tests/interop/peers.py` runs the self-test.
"""

import dataclasses
import http.server
import socket
import ssl
import struct
import threading
import time
import traceback

# ---- SMTP ---------------------------------------------------------------------------------

EXTENSIONS = ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN")

# Which EHLO keyword allows each MAIL/RCPT parameter (RFC 1870, 6152, 6531, 3461).
MAIL_PARAMETERS = {"SIZE": "SIZE", "BODY": "8BITMIME", "SMTPUTF8": "SMTPUTF8", "RET": "DSN", "ENVID": "DSN",
                   "REQUIRETLS": "REQUIRETLS"}
RCPT_PARAMETERS = {"NOTIFY": "DSN", "ORCPT": "DSN"}


def closed_port(host="127.0.0.1"):
    """A port where nothing listens on `host`: connecting there is refused at once (a dead MX)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def encode_reply(reply):
    """A reply as the wire carries it. `reply` is "250 text", a str with one line per "\\n" or a
    list of lines, each starting with its code; the "-" continuation marks are put in here.
    Bytes go out exactly as given (for tests of broken peers)."""
    if isinstance(reply, bytes):
        return reply
    lines = reply.split("\n") if isinstance(reply, str) else list(reply)
    return b"".join(
        (line[:3] + ("-" if n < len(lines) - 1 else " ") + line[4:]).rstrip().encode() + b"\r\n"
        for n, line in enumerate(lines))


def parse_path(argument, keyword=""):
    """"<a@b> KEY=VALUE KEY" -> ("a@b", {"KEY": "VALUE", "KEY": None}); with `keyword` ("FROM:",
    "TO:") the argument must start with it, in any case. ValueError when malformed."""
    if not argument.upper().startswith(keyword):
        raise ValueError(argument)
    argument = argument[len(keyword):]
    end = argument.find(">")
    if not argument.startswith("<") or end < 0:
        raise ValueError(argument)
    parameters = {}
    for word in argument[end + 1:].split():
        key, equals, value = word.partition("=")
        parameters[key.upper()] = value if equals else None
    return argument[1:end], parameters


@dataclasses.dataclass
class Transaction:
    """One mail transaction as the fake server saw it; recorded when it ends."""
    peer: tuple               # the client's (address, port)
    connection: int           # which connection to this server, from 1
    index: int                # which transaction on that connection, from 1 (> 1: a reused connection)
    helo: str                 # the EHLO/HELO command line
    mail: str                 # the MAIL command line as received, parameters included
    rcpts: list = dataclasses.field(default_factory=list)       # RCPT command lines, accepted or not
    recipients: list = dataclasses.field(default_factory=list)  # addresses whose RCPT got a 2xx
    data: bytes = None        # the content, dot-unstuffed, CRLF line ends, without the final dot
    reply: str = ""           # the reply that ended it (to the dot, or to MAIL); "" if abandoned
    pipelined: bool = False   # some MAIL/RCPT/DATA came before the reply to the command before it
    tls: str = None           # the TLS version ("TLSv1.3") when the transaction ran after STARTTLS

    @property
    def sender(self):
        return parse_path(self.mail[5:], "FROM:")[0]

    @property
    def mail_parameters(self):
        return parse_path(self.mail[5:], "FROM:")[1]

    @property
    def rcpt_parameters(self):
        """{address: parameters} of every RCPT line."""
        return dict(parse_path(line[5:], "TO:") for line in self.rcpts)

    @property
    def reused(self):
        return self.index > 1

    @property
    def accepted(self):
        return self.reply.startswith("2")


class FakeSMTPServer:
    """A scriptable SMTP server on `host:port` (port None: any free one, see `.port`).

    behaviour: "accept" (a correct ESMTP server), "greet_421" (421 at greeting, then close) or
    "hang" (accept the connection, never send a byte, keep it open until stopped).
    without: EHLO keywords not to advertise (see EXTENSIONS); their parameters are then refused.
    helo_only: EHLO gets "502 5.5.1"; only HELO works.
    fail_first, fail_reply, fail_at: the first `fail_first` transactions get `fail_reply` after
      DATA's final dot (fail_at="data") or at MAIL (fail_at="mail"); later ones go through.
    reject_rcpt: {address: reply} for RCPT (addresses compared case-insensitively).
    data_reply: the reply after the final dot instead of 250.
    Any reply may be multi-line (a list of lines, see `encode_reply`); a 421 closes the connection.
    strict: refuse bare CR/LF in commands (500) and content (550 5.6.11), as RFC 5321 §2.3.8 asks.
    tls: (certificate chain file, key file): STARTTLS is offered, and the session starts over
      under TLS (RFC 3207); `handshakes` counts the handshakes that succeeded.
    requiretls: REQUIRETLS is offered under TLS (RFC 8689), and its MAIL parameter accepted.
    """

    def __init__(self, host="127.0.0.2", port=None, behaviour="accept", *, name="fake.example",
                 without=(), helo_only=False, size=10240000, fail_first=0,
                 fail_reply="451 4.3.0 try again later", fail_at="data", reject_rcpt=None,
                 data_reply=None, greeting=None, strict=True, tls=None, requiretls=False):
        assert behaviour in ("accept", "greet_421", "hang") and fail_at in ("data", "mail")
        self.host, self.port, self.behaviour, self.name = host, port, behaviour, name
        self.extensions = [e for e in EXTENSIONS if e not in without]
        self.helo_only, self.size, self.strict = helo_only, size, strict
        self.fail_left, self.fail_reply, self.fail_at = fail_first, fail_reply, fail_at
        self.reject_rcpt = {a.lower(): r for a, r in (reject_rcpt or {}).items()}
        self.data_reply = data_reply
        self.greeting = greeting or (f"421 4.3.2 {name} busy, try later" if behaviour == "greet_421"
                                     else f"220 {name} ESMTP fake")
        self.tls_context = None
        if tls:
            self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_context.load_cert_chain(*tls)
        self.requiretls = requiretls
        self.handshakes = 0       # STARTTLS handshakes that succeeded
        self.transactions = []    # every Transaction, in the order they ended
        self.connections = 0      # connections accepted so far
        self.quits = 0            # QUIT commands received
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._sockets = set()
        self._threads = []
        self._listener = None

    def start(self):
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, self.port or 0))
        self.port = self._listener.getsockname()[1]
        self._listener.listen(64)
        self._listener.settimeout(0.1)   # the accept loop looks at _stopping this often
        self._spawn(self._accept_loop)
        return self

    def stop(self):
        self._stopping.set()
        if self._threads:
            self._threads[0].join(5)     # the accept loop: no new sessions after this
        with self._changed:
            for sock in self._sockets:   # wakes sessions blocked in recv
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for thread in list(self._threads):
            thread.join(5)
        if self._listener:
            self._listener.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def messages(self):
        """The accepted transactions."""
        with self._changed:
            return [t for t in self.transactions if t.accepted]

    def wait_for(self, count, timeout=10.0, accepted=False):
        """Waits until `count` transactions have ended, whatever their outcome (with accepted=True:
        until `count` were accepted); returns them all (or the accepted ones), in order."""
        def found():
            return self.messages if accepted else list(self.transactions)
        with self._changed:
            if not self._changed.wait_for(lambda: len(found()) >= count, timeout):
                raise AssertionError(f"{self.host}:{self.port}: {len(found())} transactions"
                                     f"{' accepted' if accepted else ''}, expected {count}: {self.transactions}")
            return found()

    def _take_failure(self, point):
        """True when this transaction, at `point` ("mail" or "data"), is one of the first `fail_first`."""
        with self._changed:
            if self.fail_at == point and self.fail_left > 0:
                self.fail_left -= 1
                return True
            return False

    def _record(self, transaction):
        with self._changed:
            self.transactions.append(transaction)
            self._changed.notify_all()

    def _spawn(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            with self._changed:
                self.connections += 1
                self._sockets.add(sock)
                number = self.connections
            self._spawn(self._serve, sock, peer, number)

    def _serve(self, sock, peer, number):
        sock.settimeout(None)
        session = None
        try:
            if self.behaviour == "hang":
                while sock.recv(4096):   # swallow everything, answer nothing
                    pass
            else:
                session = _Session(self, sock, peer, number)
                session.run()
        except OSError:   # ssl.SSLError too: a client that refused our certificate
            pass
        finally:
            with self._changed:
                self._sockets.discard(sock)
                if session:
                    self._sockets.discard(session.sock)
            sock.close()
            if session:
                session.sock.close()


class _Session:
    """One SMTP connection to a FakeSMTPServer."""

    def __init__(self, server, sock, peer, number):
        self.server, self.sock, self.peer, self.number = server, sock, peer, number
        self.helo = None            # the EHLO/HELO line, once given
        self.extensions = []        # advertised to this client (none after HELO)
        self.transaction = None
        self.index = 0              # transactions started on this connection
        self.content = None         # the content lines while in DATA, else None
        self.output = []            # replies not sent yet: flushed when the input runs dry
        self.closing = False
        self.start_tls = False      # the 220 to STARTTLS is queued: the handshake follows it
        self.tls = None             # the TLS version once the handshake is done

    def run(self):
        if not self.reply(self.server.greeting).startswith("220"):
            self.closing = True         # 421 or 554 at greeting: nothing more (RFC 5321 §3.1)
        buffer, pending = b"", False
        while not self.closing:
            self.flush()
            # A command is pipelined if it came before the replies to what precedes it were sent:
            # part of it was here at the last flush, or it follows other lines in this read.
            pending = bool(buffer)
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
            first = True
            while not self.closing and b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                if self.content is not None:
                    self.content_line(line)
                else:
                    self.command(line, pipelined=pending or not first)
                first = False
                if self.start_tls:
                    # RFC 3207 §4.2: the session starts over under TLS; anything the client sent
                    # after STARTTLS in plaintext is dropped, never read as a command.
                    self.flush()
                    self.sock = self.server.tls_context.wrap_socket(self.sock, server_side=True)
                    with self.server._changed:
                        self.server._sockets.add(self.sock)
                        self.server.handshakes += 1
                    self.tls = self.sock.version()
                    self.start_tls, self.helo, self.extensions, buffer = False, None, [], b""
                    break
        self.flush()
        self.end_transaction("")    # a disconnect in the middle abandons it

    def flush(self):
        if self.output:
            self.sock.sendall(b"".join(self.output))
            self.output = []

    def reply(self, reply):
        """Queues `reply` (see encode_reply); returns its text, lines joined by "\n". A 421 closes
        the connection, as it says (RFC 5321 §3.8)."""
        data = encode_reply(reply)
        self.output.append(data)
        if data[:3] == b"421":
            self.closing = True
        return data.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")

    def say(self, code, status, text):
        """One of our own replies; enhanced status codes only when they were advertised."""
        return self.reply(f"{code} {status} {text}" if "ENHANCEDSTATUSCODES" in self.extensions
                          else f"{code} {text}")

    def end_transaction(self, reply):
        if self.transaction:
            self.transaction.reply = reply
            self.server._record(self.transaction)
            self.transaction = None

    def command(self, raw, pipelined):
        line = raw.decode("utf-8", "surrogateescape")
        verb, _, argument = line.partition(" ")
        verb = verb.upper()
        if self.server.strict and ("\r" in line or "\n" in line):
            self.say(500, "5.5.2", "bare CR or LF in command")
        elif verb in ("EHLO", "HELO"):
            self.hello(verb, argument, line)
        elif verb == "MAIL":
            self.mail(argument, line, pipelined)
        elif verb == "RCPT":
            self.rcpt(argument, line, pipelined)
        elif verb == "DATA":
            self.data(argument, pipelined)
        elif verb == "RSET":
            self.end_transaction("")
            self.say(250, "2.0.0", "Ok")
        elif verb == "NOOP":
            self.say(250, "2.0.0", "Ok")
        elif verb == "VRFY":
            self.say(252, "2.5.0", "Cannot VRFY user")
        elif verb == "STARTTLS":
            if not self.server.tls_context or "STARTTLS" not in self.extensions:
                self.say(502, "5.5.1", "STARTTLS not available")
            elif self.transaction:
                self.say(503, "5.5.1", "STARTTLS in a transaction")
            else:
                self.reply("220 2.0.0 Ready to start TLS")
                self.start_tls = True
        elif verb == "QUIT":
            with self.server._changed:
                self.server.quits += 1
            self.say(221, "2.0.0", "Bye")
            self.closing = True
        else:
            self.say(500, "5.5.2", "command not recognized")

    def hello(self, verb, argument, line):
        if not argument.strip():
            return self.say(501, "5.5.4", f"{verb} needs a domain")
        if verb == "EHLO" and self.server.helo_only:
            return self.reply("502 5.5.1 command not implemented")
        self.end_transaction("")    # EHLO/HELO resets the transaction (RFC 5321 §4.1.4)
        self.helo = line
        if verb == "HELO":
            self.extensions = []
            return self.reply(f"250 {self.server.name}")
        self.extensions = list(self.server.extensions)
        if self.server.tls_context and not self.tls:
            self.extensions.append("STARTTLS")
        if self.server.requiretls and self.tls:
            self.extensions.append("REQUIRETLS")
        self.reply([f"250 {self.server.name} greets {argument.strip()}"] +
                   [f"250 {e} {self.server.size}" if e == "SIZE" else f"250 {e}" for e in self.extensions])

    def refused_parameter(self, parameters, allowed):
        """The reply for a parameter this client may not use here, or None when all are fine."""
        for key, value in parameters.items():
            if allowed.get(key) not in self.extensions:
                return self.say(555, "5.5.4", f"{key} parameter not recognized")
            if key == "REQUIRETLS" and value is not None:
                return self.say(501, "5.5.4", "REQUIRETLS takes no value")
            if key == "SIZE" and not (value or "").isdigit():
                return self.say(501, "5.5.4", "SIZE needs a number")
            if key == "SIZE" and int(value) > self.server.size:
                return self.say(552, "5.3.4", "message too big")
        return None

    def mail(self, argument, line, pipelined):
        if self.helo is None or self.transaction:
            return self.say(503, "5.5.1", "bad sequence of commands")
        try:
            _, parameters = parse_path(argument, "FROM:")
        except ValueError:
            return self.say(501, "5.5.4", "syntax: MAIL FROM:<address>")
        self.index += 1
        self.transaction = Transaction(self.peer, self.number, self.index, self.helo, line, pipelined=pipelined,
                                       tls=self.tls)
        if self.server._take_failure("mail"):
            return self.end_transaction(self.reply(self.server.fail_reply))
        refusal = self.refused_parameter(parameters, MAIL_PARAMETERS)
        if refusal is None and not line.isascii() and "SMTPUTF8" not in parameters:
            refusal = self.say(553, "5.6.7", "non-ASCII address without SMTPUTF8")
        if refusal:
            return self.end_transaction(refusal)
        self.say(250, "2.1.0", "Ok")

    def rcpt(self, argument, line, pipelined):
        if not self.transaction:
            return self.say(503, "5.5.1", "need MAIL first")
        try:
            address, parameters = parse_path(argument, "TO:")
        except ValueError:
            return self.say(501, "5.5.4", "syntax: RCPT TO:<address>")
        self.transaction.rcpts.append(line)
        self.transaction.pipelined |= pipelined
        if self.refused_parameter(parameters, RCPT_PARAMETERS):
            return
        if not address.isascii() and "SMTPUTF8" not in self.transaction.mail_parameters:
            return self.say(553, "5.6.7", "non-ASCII address without SMTPUTF8")
        reply = self.server.reject_rcpt.get(address.lower())
        if reply is None:
            self.say(250, "2.1.5", "Ok")
            self.transaction.recipients.append(address)
        elif self.reply(reply).startswith("2"):
            self.transaction.recipients.append(address)

    def data(self, argument, pipelined):
        if not self.transaction:
            return self.say(503, "5.5.1", "need MAIL first")
        self.transaction.pipelined |= pipelined
        if argument:
            return self.say(501, "5.5.4", "DATA takes no argument")
        if not self.transaction.recipients:
            return self.say(554, "5.5.1", "no valid recipients")
        self.reply("354 End data with <CR><LF>.<CR><LF>")
        self.content = []

    def content_line(self, line):
        if line != b".":
            self.content.append(line[1:] if line.startswith(b".") else line)   # dot-unstuffing
            return
        lines, self.content = self.content, None
        data = self.transaction.data = b"".join(line + b"\r\n" for line in lines)
        server = self.server
        if server.strict and any(b"\r" in line or b"\n" in line for line in lines):
            reply = self.say(550, "5.6.11", "bare CR or LF in message content")
        elif len(data) > server.size:
            reply = self.say(552, "5.3.4", "message too big")
        elif server._take_failure("data"):
            reply = self.reply(server.fail_reply)
        elif server.data_reply:
            reply = self.reply(server.data_reply)
        else:
            reply = self.say(250, "2.0.0", f"Ok: queued as F{self.number}X{self.index}")
        self.end_transaction(reply)


# ---- DNS ----------------------------------------------------------------------------------

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28, "OPT": 41, "TLSA": 52, "ANY": 255}
TYPE_NAMES = {number: name for name, number in TYPES.items()}
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 1, 2, 3, 4


class HTTPSServer:
    """An HTTPS server on 127.0.0.1 (an ephemeral port, `port`) answering with `handler`, a
    BaseHTTPRequestHandler class, under `certificate` (certificate file, key file). A context
    manager: serves on a thread from `with` to its end."""

    def __init__(self, certificate, handler):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*certificate)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def encode_name(name):
    """A domain name in wire form, uncompressed; "" and "." are the root."""
    labels = [label.encode() for label in name.rstrip(".").split(".") if label]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def read_name(packet, offset):
    """(name, offset after it) at `offset`, following compression pointers (RFC 1035 §4.1.4)."""
    labels, end = [], None
    for _ in range(128):
        length = packet[offset]
        if length >= 0xC0:
            end = end or offset + 2
            offset = ((length & 0x3F) << 8) | packet[offset + 1]
        elif length == 0:
            return ".".join(labels), end or offset + 1
        else:
            labels.append(packet[offset + 1:offset + 1 + length].decode("ascii", "replace"))
            offset += 1 + length
    raise ValueError("compression loop")


def rdata(record):
    """The RDATA of a table record such as ("MX", 10, "mx1.example.net") or ("A", "127.0.0.2")."""
    kind = record[0]
    if kind == "A":
        return socket.inet_pton(socket.AF_INET, record[1])
    if kind == "AAAA":
        return socket.inet_pton(socket.AF_INET6, record[1])
    if kind == "MX":
        return struct.pack("!H", record[1]) + encode_name(record[2])
    if kind in ("CNAME", "NS"):
        return encode_name(record[1])
    if kind == "TXT":
        text = record[1].encode()
        return b"".join(bytes([len(text[i:i + 255])]) + text[i:i + 255] for i in range(0, max(len(text), 1), 255))
    if kind == "TLSA":   # ("TLSA", usage, selector, matching type, association data in hex)
        return struct.pack("!BBB", record[1], record[2], record[3]) + bytes.fromhex(record[4])
    raise ValueError(f"unsupported record {record!r}")


class DNS:
    """A DNS server on UDP `host:port` (port None: any free one, see `.port`) answering from
    `records`: {name: [record, ...]} with records ("MX", preference, exchange) (exchange "."
    is a null MX), ("A", "127.0.0.2"), ("AAAA", "::1"), ("CNAME", target), ("NS", host),
    ("TXT", text), ("TLSA", usage, selector, matching type, hex data), or the behaviours
    ("SERVFAIL",) (answer SERVFAIL) and ("DROP",) (never answer).
    `authenticated`: the names (lower case) whose answers carry the AD bit, as a validating
    resolver sets it for DNSSEC-signed data (RFC 4035 §3.2.3), or True for every answer. The bit
    says what Tern's DANE code reads; no signatures are made.

    A name absent from the table gets NXDOMAIN, unless a listed name is below it (an empty
    non-terminal) or it is a single label (a TLD, the apex of a zone we serve): then NODATA.
    A listed name with no record of the asked type (or listed as []) gets NODATA. Negative
    answers carry the zone's SOA (the zone being the name's last label), as RFC 2308 asks, with
    `ttl` as its TTL and MINIMUM; answers have TTL `ttl`. `records` is read at every query, so
    a test may change it while running. `queries` lists (name, type) as asked. No TCP: a reply
    that does not fit comes back with TC set (keep tables small).
    """

    def __init__(self, records, host="127.0.0.1", port=None, ttl=300, authenticated=()):
        for name, entries in records.items():
            for record in entries:
                if record not in [("SERVFAIL",), ("DROP",)]:
                    rdata(record)   # refuse a bad table now, not at the first query
        self.records, self.host, self.port, self.ttl = records, host, port, ttl
        self.authenticated = authenticated
        self.queries = []
        self._stopping = threading.Event()
        self._socket = self._thread = None

    def start(self):
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((self.host, self.port or 0))
        self.port = self._socket.getsockname()[1]
        self._socket.settimeout(0.1)   # the loop looks at _stopping this often
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._thread:
            self._thread.join(5)
            self._socket.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _loop(self):
        while not self._stopping.is_set():
            try:
                query, client = self._socket.recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            try:
                reply = self.answer(query)
            except (IndexError, ValueError, struct.error):   # a malformed query
                reply = query[:2] + struct.pack("!5H", 0x8000 | FORMERR, 0, 0, 0, 0) if len(query) >= 12 else None
            except Exception:                                  # a bad record put in the table later
                traceback.print_exc()
                reply = query[:2] + struct.pack("!5H", 0x8000 | SERVFAIL, 0, 0, 0, 0)
            if reply:
                self._socket.sendto(reply, client)

    def answer(self, query):
        """The reply to one query message, or None to stay silent."""
        qid, flags, qdcount, _, nscount, arcount = struct.unpack("!6H", query[:12])
        if flags & 0x8000:
            return None   # a response, not a query
        reply_flags = 0x8000 | 0x0400 | (flags & 0x7900) | 0x0080   # QR, AA, opcode and RD as asked, RA
        if qdcount != 1 or (flags >> 11) & 0xF != 0:
            return struct.pack("!6H", qid, reply_flags | (FORMERR if qdcount != 1 else NOTIMP), 0, 0, 0, 0)
        name, offset = read_name(query, 12)
        qtype, qclass = struct.unpack("!HH", query[offset:offset + 4])
        question_end = offset + 4
        # An OPT record among the additional ones (EDNS, RFC 6891) raises the size limit.
        limit, offset = 512, question_end
        edns = False
        for _ in range(nscount + arcount):
            _, offset = read_name(query, offset)
            rtype, rclass, _, length = struct.unpack("!HHIH", query[offset:offset + 10])
            offset += 10 + length
            if rtype == TYPES["OPT"]:
                edns, limit = True, max(512, rclass)

        key = name.lower().rstrip(".")
        self.queries.append((key, TYPE_NAMES.get(qtype, qtype)))
        if self.authenticated is True or key in self.authenticated:
            reply_flags |= 0x0020   # AD: "validated" (RFC 4035 §3.2.3)
        table = {k.lower().rstrip("."): v for k, v in self.records.items()}
        entries = table.get(key)
        if entries and ("DROP",) in entries:
            return None
        rcode = NOERROR
        answers, authority = [], []
        if entries and ("SERVFAIL",) in entries:
            rcode = SERVFAIL
        elif qclass != 1:
            rcode = NOTIMP
        else:
            owner, found = b"\xc0\x0c", False   # a pointer to the question's name, as spelt there
            for _ in range(8):    # follows CNAMEs within the table
                entries = table.get(key)
                cname = [r for r in entries or [] if r[0] == "CNAME"]
                if cname and qtype != TYPES["CNAME"]:
                    answers.append(self.record(owner, cname[0]))
                    key, owner = cname[0][1].lower().rstrip("."), encode_name(cname[0][1])
                    continue
                matching = [r for r in entries or [] if r[0] in TYPES and qtype in (TYPES[r[0]], TYPES["ANY"])]
                answers += [self.record(owner, r) for r in matching]
                found = bool(matching)
                break
            if entries is None and "." in key and not any(k.endswith("." + key) for k in table):
                rcode = NXDOMAIN
            if qtype == TYPES["SOA"] and "." not in key:   # a single label: the apex of a zone we serve
                answers.append(self.soa(owner))
                found = True
            if not found:         # NXDOMAIN or NODATA: the zone's SOA says for how long (RFC 2308)
                authority.append(self.soa(encode_name(key.rsplit(".", 1)[-1])))

        opt = b"\0" + struct.pack("!HHIH", TYPES["OPT"], 1232, 0, 0) if edns else b""
        question = query[12:question_end]
        body = question + b"".join(answers) + b"".join(authority) + opt
        if 12 + len(body) > limit:
            answers, authority, body = [], [], question + opt
            reply_flags |= 0x0200   # TC: too big for UDP
        return struct.pack("!6H", qid, reply_flags | rcode, 1, len(answers), len(authority),
                           1 if edns else 0) + body

    def record(self, owner, record):
        data = rdata(record)
        return owner + struct.pack("!HHIH", TYPES[record[0]], 1, self.ttl, len(data)) + data

    def soa(self, zone):
        """The SOA of `zone` (wire form): MINIMUM, like the TTL, is `ttl` (RFC 2308 §5)."""
        data = encode_name("ns.invalid") + encode_name("hostmaster.invalid") + struct.pack(
            "!5I", 1, 3600, 600, 86400, self.ttl)
        return zone + struct.pack("!HHIH", TYPES["SOA"], 1, self.ttl, len(data)) + data


def dns_query(port, name, qtype="MX", host="127.0.0.1", timeout=2.0, edns=True):
    """Asks `host:port` one question; returns (rcode, flags, answers, authority), each record as
    (name, type, ttl, value): value is an address, (preference, exchange) for MX, a name for
    CNAME/NS, (mname, rname, serial, refresh, retry, expire, minimum) for SOA, bytes otherwise."""
    opt = b"\0" + struct.pack("!HHIH", TYPES["OPT"], 1232, 0x8000, 0) if edns else b""
    query = struct.pack("!6H", 0x1234, 0x0100, 1, 0, 0, 1 if edns else 0) + encode_name(name) + \
        struct.pack("!HH", TYPES[qtype], 1) + opt
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query, (host, port))
        reply = s.recv(4096)
    qid, flags, qdcount, ancount, nscount, _ = struct.unpack("!6H", reply[:12])
    assert qid == 0x1234 and qdcount == 1, reply
    offset = read_name(reply, 12)[1] + 4
    sections = []
    for count in (ancount, nscount):
        records = []
        for _ in range(count):
            owner, offset = read_name(reply, offset)
            rtype, _, ttl, length = struct.unpack("!HHIH", reply[offset:offset + 10])
            offset += 10
            raw = reply[offset:offset + length]
            kind = TYPE_NAMES.get(rtype, rtype)
            if kind in ("A", "AAAA"):
                value = socket.inet_ntop(socket.AF_INET if kind == "A" else socket.AF_INET6, raw)
            elif kind == "MX":
                value = (struct.unpack("!H", raw[:2])[0], read_name(reply, offset + 2)[0] or ".")
            elif kind in ("CNAME", "NS"):
                value = read_name(reply, offset)[0]
            elif kind == "SOA":
                mname, at = read_name(reply, offset)
                rname, at = read_name(reply, at)
                value = (mname, rname, *struct.unpack("!5I", reply[at:at + 20]))
            else:
                value = raw
            records.append((owner, kind, ttl, value))
            offset += length
        sections.append(records)
    return flags & 0xF, flags, sections[0], sections[1]


# ---- self-test ----------------------------------------------------------------------------

def self_test():
    import smtplib
    import subprocess

    start = time.monotonic()
    threads_before = threading.active_count()

    # DNS: MX with preferences, a null MX, an implicit MX, NXDOMAIN, NODATA, CNAME, SERVFAIL, DROP.
    records = {"example.net": [("MX", 10, "mx1.example.net"), ("MX", 20, "mx2.example.net")],
               "mx1.example.net": [("A", "127.0.0.2")],
               "mx2.example.net": [("A", "127.0.0.3"), ("AAAA", "::1")],
               "null.example": [("MX", 0, ".")],
               "implicit.example": [("A", "127.0.0.4")],
               "alias.example": [("CNAME", "mx1.example.net")],
               "broken.example": [("SERVFAIL",)],
               "silent.example": [("DROP",)],
               "big.example": [("MX", n, f"mx{n}.a-long-name-to-fill-the-reply.example") for n in range(20)]}
    with DNS(records, ttl=60) as dns:
        rcode, flags, answers, authority = dns_query(dns.port, "Example.NET", "MX")
        assert rcode == NOERROR and flags & 0x0400 and not authority, (rcode, answers, authority)
        assert [(a[0], a[3]) for a in answers] == [("Example.NET", (10, "mx1.example.net")),
                                                  ("Example.NET", (20, "mx2.example.net"))], answers
        assert dns_query(dns.port, "null.example")[2] == [("null.example", "MX", 60, (0, "."))]
        rcode, _, answers, authority = dns_query(dns.port, "implicit.example", "MX")
        assert rcode == NOERROR and answers == [] and authority[0][:2] == ("example", "SOA"), authority
        assert authority[0][3][-1] == 60, authority
        assert dns_query(dns.port, "implicit.example", "A")[2][0][3] == "127.0.0.4"
        rcode, _, answers, authority = dns_query(dns.port, "nothing.example", "MX", edns=False)
        assert rcode == NXDOMAIN and answers == [] and authority[0][1] == "SOA", (rcode, authority)
        assert dns_query(dns.port, "net", "MX")[0] == NOERROR          # an empty non-terminal
        rcode, _, answers, authority = dns_query(dns.port, "mx1.example.net", "AAAA")
        assert rcode == NOERROR and answers == [] and authority, (answers, authority)
        assert dns_query(dns.port, "mx2.example.net", "AAAA")[2][0][3] == "::1"
        rcode, _, answers, authority = dns_query(dns.port, "alias.example", "A")
        assert [a[1:] for a in answers] == [("CNAME", 60, "mx1.example.net"), ("A", 60, "127.0.0.2")], answers
        assert not authority
        assert dns_query(dns.port, "broken.example", "MX")[0] == SERVFAIL
        try:
            dns_query(dns.port, "silent.example", "MX", timeout=0.5)
            raise AssertionError("silent.example answered")
        except socket.timeout:
            pass
        # Over 512 octets: truncated (TC) without EDNS, whole with EDNS's 1232.
        rcode, flags, answers, _ = dns_query(dns.port, "big.example", edns=False)
        assert flags & 0x0200 and answers == [], (flags, answers)
        rcode, flags, answers, _ = dns_query(dns.port, "big.example")
        assert not flags & 0x0200 and len(answers) == 20, (flags, answers)
        assert ("nothing.example", "MX") in dns.queries
        records["late.example"] = [("MX", 5, "mx1.example.net")]     # the table is read per query
        assert dns_query(dns.port, "late.example")[2][0][3] == (5, "mx1.example.net")
        dnspython_check(dns.port)
    # The AD bit on the names said to be validated, and TLSA records.
    secure = {"mx.secure.example": [("A", "127.0.0.2")],
              "_25._tcp.mx.secure.example": [("TLSA", 3, 1, 1, "ab" * 32)],
              "mx.plain.example": [("A", "127.0.0.3")]}
    with DNS(secure, authenticated={"mx.secure.example", "_25._tcp.mx.secure.example"}) as dns:
        assert dns_query(dns.port, "mx.secure.example", "A")[1] & 0x0020
        assert not dns_query(dns.port, "mx.plain.example", "A")[1] & 0x0020
        rcode, flags, answers, _ = dns_query(dns.port, "_25._tcp.mx.secure.example", "TLSA")
        assert flags & 0x0020 and answers[0][1:] == ("TLSA", 300, bytes([3, 1, 1]) + b"\xab" * 32), answers
    print(f"ok   DNS ({time.monotonic() - start:.1f}s)")

    # Two fake MX hosts on one port number, different addresses.
    port = closed_port("127.0.0.2")
    with FakeSMTPServer("127.0.0.2", port) as mx1, FakeSMTPServer("127.0.0.3", port) as mx2:
        with smtplib.SMTP("127.0.0.2", port, timeout=5) as client:
            client.ehlo("tern.example")
            for extension in ("pipelining", "size", "8bitmime", "enhancedstatuscodes", "smtputf8", "dsn"):
                assert client.has_extn(extension), extension
            message = b"Subject: one\r\n\r\n.dotted line\r\n..two dots\r\nend\r\n"
            # smtplib adds "size=N" itself when SIZE is advertised.
            client.sendmail("a@tern.example", ["x@example.net", "y@example.net"], message,
                            mail_options=["BODY=8BITMIME"], rcpt_options=["NOTIFY=FAILURE"])
            client.sendmail("b@tern.example", ["z@example.net"], b"Subject: two\r\n\r\nbody\r\n")
            assert client.noop()[0] == 250 and client.rset()[0] == 250
            assert client.docmd("RCPT TO:<x@example.net>")[0] == 503
            assert client.docmd("MAIL FROM:<a@tern.example> FOO=BAR")[0] == 555
            assert client.docmd("MAIL FROM: <a@tern.example>")[0] == 501
        first, second, refused = mx1.wait_for(3)
        size = str(len(message))
        assert first.mail == f"mail FROM:<a@tern.example> size={size} BODY=8BITMIME", first.mail
        assert first.sender == "a@tern.example" and first.mail_parameters == {"SIZE": size, "BODY": "8BITMIME"}
        assert first.rcpts == ["rcpt TO:<x@example.net> NOTIFY=FAILURE", "rcpt TO:<y@example.net> NOTIFY=FAILURE"]
        assert first.rcpt_parameters == {"x@example.net": {"NOTIFY": "FAILURE"}, "y@example.net": {"NOTIFY": "FAILURE"}}
        assert first.recipients == ["x@example.net", "y@example.net"]
        assert first.data == b"Subject: one\r\n\r\n.dotted line\r\n..two dots\r\nend\r\n", first.data
        assert first.peer[0] == "127.0.0.1" and first.helo == "ehlo tern.example"
        assert (first.connection, first.index, first.reused) == (1, 1, False)
        assert (second.connection, second.index, second.reused) == (1, 2, True)
        assert first.reply.startswith("250 2.0.0") and not first.pipelined
        assert refused.reply.startswith("555") and not refused.accepted and refused.index == 3
        assert mx1.connections == 1 and mx1.quits == 1

        # swaks pipelines MAIL, RCPT and DATA; the second host on the same port gets it.
        result = subprocess.run(["swaks", "--hide-all", "--server", f"127.0.0.3:{port}", "--from", "s@tern.example",
                                 "--to", "a@b.example", "--pipeline"], capture_output=True, timeout=20)
        assert result.returncode == 0, result.stdout + result.stderr
        (swaked,) = mx2.wait_for(1)
        assert swaked.pipelined and swaked.recipients == ["a@b.example"] and b"\r\n\r\n" in swaked.data, swaked

        # Everything in one write: each command answered, in order, reply to DATA's dot included.
        with socket.create_connection(("127.0.0.2", port), timeout=5) as raw:
            raw.sendall(b"EHLO raw.example\r\nMAIL FROM:<r@tern.example>\r\nRCPT TO:<p@example.net>\r\n"
                        b"DATA\r\nSubject: raw\r\n\r\n..\r\n.\r\nNOOP\nNOOP\r\nQUIT\r\n")
            replies = read_all(raw)
        codes = [line[:4] for line in replies.split(b"\r\n") if line[3:4] == b" "]
        assert codes == [b"220 ", b"250 ", b"250 ", b"250 ", b"354 ", b"250 ", b"500 ", b"221 "], replies
        raw_tx = mx1.wait_for(3, accepted=True)[2]
        assert raw_tx.data == b"Subject: raw\r\n\r\n.\r\n" and raw_tx.pipelined and raw_tx.connection == 2
        # A bare LF in the content is refused (RFC 5321 §2.3.8) and still recorded.
        with socket.create_connection(("127.0.0.2", port), timeout=5) as raw:
            raw.sendall(b"HELO raw.example\r\nMAIL FROM:<r@tern.example>\r\nRCPT TO:<p@example.net>\r\n"
                        b"DATA\r\nbare\nLF\r\n.\r\nQUIT\r\n")
            assert b"\r\n550 bare CR or LF in message content\r\n221 Bye\r\n" in read_all(raw)
        assert mx1.transactions[-1].data == b"bare\nLF\r\n" and mx1.transactions[-1].helo == "HELO raw.example"
    print(f"ok   accept, pipelining, two hosts on one port ({time.monotonic() - start:.1f}s)")

    # Per-recipient replies (multi-line), a final reply after data, fail_first at DATA and MAIL.
    reject = {"nobody@example.net": ["550 5.1.1 <nobody@example.net>: user unknown", "550 5.1.1 really"]}
    with FakeSMTPServer("127.0.0.2", reject_rcpt=reject, fail_first=1) as mx:
        with smtplib.SMTP("127.0.0.2", mx.port, timeout=5) as client:
            try:
                client.sendmail("a@tern.example", ["nobody@example.net"], b"x\r\n")
                raise AssertionError("all recipients refused, yet sent")
            except smtplib.SMTPRecipientsRefused as error:
                code, text = error.recipients["nobody@example.net"]
                assert code == 550 and text == b"5.1.1 <nobody@example.net>: user unknown\n5.1.1 really", text
            try:
                client.sendmail("a@tern.example", ["ok@example.net"], b"x\r\n")
                raise AssertionError("fail_first did not fail")
            except smtplib.SMTPDataError as error:
                assert error.smtp_code == 451 and error.smtp_error == b"4.3.0 try again later", error
            client.sendmail("a@tern.example", ["ok@example.net", "nobody@example.net"], b"x\r\n")
        assert [t.reply[:3] for t in mx.transactions] == ["", "451", "250"], mx.transactions
        assert mx.transactions[0].rcpts == ["rcpt TO:<nobody@example.net>"] and mx.transactions[0].data is None
        assert mx.wait_for(3)[2].recipients == ["ok@example.net"] and len(mx.messages) == 1
    with FakeSMTPServer("127.0.0.2", data_reply="554 5.7.1 rejected", fail_first=1, fail_at="mail",
                        fail_reply="421 4.3.2 closing") as mx:
        with smtplib.SMTP("127.0.0.2", mx.port, timeout=5) as client:
            client.ehlo("tern.example")
            assert client.mail("a@tern.example")[0] == 421
            try:
                client.noop()
                raise AssertionError("still open after 421")
            except smtplib.SMTPServerDisconnected:
                pass
        with smtplib.SMTP("127.0.0.2", mx.port, timeout=5) as client:
            try:
                client.sendmail("a@tern.example", ["ok@example.net"], b"x\r\n")
                raise AssertionError("data_reply ignored")
            except smtplib.SMTPDataError as error:
                assert error.smtp_code == 554 and error.smtp_error == b"5.7.1 rejected"
        assert [t.reply[:3] for t in mx.transactions] == ["421", "554"] and mx.connections == 2
    print(f"ok   reject_rcpt, data_reply, fail_first ({time.monotonic() - start:.1f}s)")

    # HELO only; extensions switched off; SMTPUTF8 addresses refused without the parameter.
    with FakeSMTPServer("127.0.0.2", helo_only=True) as old, FakeSMTPServer("127.0.0.3", without=("PIPELINING", "DSN")) as plain:
        with smtplib.SMTP("127.0.0.2", old.port, timeout=5) as client:
            assert client.ehlo("tern.example") == (502, b"5.5.1 command not implemented")
            assert client.helo("tern.example")[0] == 250
            assert client.docmd("MAIL FROM:<a@tern.example> SIZE=10")[0] == 555   # no ESMTP after HELO
            assert client.mail("a@tern.example") == (250, b"Ok")    # no enhanced codes after HELO
        with smtplib.SMTP("127.0.0.3", plain.port, timeout=5) as client:
            client.ehlo("tern.example")
            assert not client.has_extn("pipelining") and not client.has_extn("dsn") and client.has_extn("size")
            client.send("MAIL FROM:<jörg@tern.example>\r\n".encode())   # smtplib would refuse to send it
            assert client.getreply()[0] == 553
            assert client.mail("jörg@tern.example", ["SMTPUTF8"])[0] == 250
            assert client.rcpt("x@example.net", ["NOTIFY=NEVER"])[0] == 555
    print(f"ok   helo_only, without, SMTPUTF8 ({time.monotonic() - start:.1f}s)")

    # STARTTLS: offered, the session starts over under TLS, REQUIRETLS offered only then.
    import tempfile
    folder = tempfile.mkdtemp(prefix="peers-tls-")
    certificate, key = f"{folder}/cert.pem", f"{folder}/key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", certificate, "-days", "1", "-subj", "/CN=mx.tls.example"],
                   check=True, capture_output=True, timeout=30)
    with FakeSMTPServer("127.0.0.2", tls=(certificate, key), requiretls=True) as secure:
        with smtplib.SMTP("127.0.0.2", secure.port, timeout=5) as client:
            client.ehlo("tern.example")
            assert client.has_extn("starttls") and not client.has_extn("requiretls")
            client.starttls(context=ssl._create_unverified_context())
            client.ehlo("tern.example")
            assert not client.has_extn("starttls") and client.has_extn("requiretls")
            client.sendmail("a@tern.example", ["x@example.net"], b"Subject: tls\r\n\r\nsecret\r\n",
                            mail_options=["REQUIRETLS"])
        [transaction] = secure.wait_for(1, accepted=True)
        assert transaction.tls.startswith("TLSv1") and "REQUIRETLS" in transaction.mail_parameters
        assert secure.handshakes == 1
    subprocess.run(["rm", "-rf", folder], check=False)
    print(f"ok   STARTTLS, REQUIRETLS ({time.monotonic() - start:.1f}s)")

    # 421 at greeting; a silent server; nothing listening.
    with FakeSMTPServer("127.0.0.2", behaviour="greet_421") as busy, \
            FakeSMTPServer("127.0.0.3", behaviour="hang") as silent:
        try:
            smtplib.SMTP("127.0.0.2", busy.port, timeout=5)
            raise AssertionError("greet_421 greeted")
        except smtplib.SMTPConnectError as error:
            assert error.smtp_code == 421, error
        with socket.create_connection(("127.0.0.3", silent.port), timeout=1) as hung:
            try:
                data = hung.recv(100)
                raise AssertionError(f"hang sent {data!r}")
            except socket.timeout:
                pass
        assert busy.connections == 1 and silent.connections == 1
    try:
        socket.create_connection(("127.0.0.5", closed_port("127.0.0.5")), timeout=2).close()
        raise AssertionError("closed_port accepted a connection")
    except ConnectionRefusedError:
        pass
    print(f"ok   greet_421, hang, refused ({time.monotonic() - start:.1f}s)")

    deadline = time.monotonic() + 5
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == threads_before, threading.enumerate()
    print(f"all passed in {time.monotonic() - start:.1f}s")


def read_all(sock):
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def dnspython_check(port):
    """Cross-checks the DNS server with dnspython when it is installed (dig is not, here)."""
    try:
        import dns.message
        import dns.query
        import dns.rcode
    except ImportError:
        print("     (dnspython not installed: DNS checked with dns_query only)")
        return
    for name, qtype, rcode, answer, authority in [
            ("example.net", "MX", "NOERROR", {"10 mx1.example.net.", "20 mx2.example.net."}, 0),
            ("null.example", "MX", "NOERROR", {"0 ."}, 0),
            ("implicit.example", "MX", "NOERROR", set(), 1),
            ("implicit.example", "A", "NOERROR", {"127.0.0.4"}, 0),
            ("nothing.example", "MX", "NXDOMAIN", set(), 1),
            ("alias.example", "A", "NOERROR", {"mx1.example.net.", "127.0.0.2"}, 0),
            ("broken.example", "MX", "SERVFAIL", set(), 0)]:
        reply = dns.query.udp(dns.message.make_query(name, qtype, want_dnssec=True), "127.0.0.1", port=port, timeout=2)
        got = {item.to_text() for rrset in reply.answer for item in rrset}
        assert dns.rcode.to_text(reply.rcode()) == rcode and got == answer, (name, qtype, reply.to_text())
        assert len(reply.authority) == authority and all(r.rdtype == 6 for r in reply.authority), reply.to_text()


if __name__ == "__main__":
    self_test()
