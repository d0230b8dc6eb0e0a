#!/usr/bin/python3
"""A small milter (pymilter, libmilter underneath) for Tern's live milter test.

Usage: pymilter_peer.py PORT

Listens on 127.0.0.1:PORT. At the end of each message it adds
"X-Pymilter: rcpts=N client=ADDR subject=SUBJECT", where ADDR is the {client_addr} macro,
and rejects a message whose Subject contains "reject me" with 554 5.7.1. It declines the
steps it has no callback for (pymilter turns those into SMFIP_NO* flags), so the client's
handling of declined steps meets a real libmilter.
"""
import sys

import Milter


class Peer(Milter.Base):
    def __init__(self):
        self.recipients = []
        self.subject = ""

    def envfrom(self, sender, *parameters):
        self.recipients = []
        self.subject = ""
        return Milter.CONTINUE

    def envrcpt(self, recipient, *parameters):
        self.recipients.append(recipient)
        return Milter.CONTINUE

    def header(self, name, value):
        if name.lower() == "subject":
            self.subject = value
        return Milter.CONTINUE

    def eom(self):
        if "reject me" in self.subject:
            self.setreply("554", "5.7.1", "Rejected by pymilter")
            return Milter.REJECT
        self.addheader(
            "X-Pymilter",
            "rcpts=%d client=%s subject=%s"
            % (len(self.recipients), self.getsymval("{client_addr}"), self.subject),
        )
        return Milter.ACCEPT


if __name__ == "__main__":
    Milter.factory = Peer
    Milter.set_flags(Milter.ADDHDRS)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    Milter.runmilter("pymilter-peer", "inet:%s@127.0.0.1" % sys.argv[1], 30)
