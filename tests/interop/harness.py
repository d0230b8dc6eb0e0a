"""Running the real `tern` binary for interop tests: configuration, start/stop, Maildirs.

Everything listens on loopback; every test gets its own data directory under a temporary
folder. Only the Python standard library is used.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

TERN = os.environ.get("TERN_BINARY", ".build/debug/tern")


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=15.0, host="127.0.0.1"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                s.settimeout(5)   # a greet_pause holds the greeting back
                s.recv(512)
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {host}:{port} after {timeout}s")


class Tern:
    """One Tern server process with its own configuration and data directory."""

    def __init__(self, extra="", dns_port=None, data_dir=None, limits="", delivery='retry = ["2s"]', listen="",
                 trusted='"127.0.0.1/32"'):
        """`listen`: more lines for [listen] (submission ports); `trusted`: the
        trusted_networks array's contents ("" = nobody relays without AUTH)."""
        self.folder = tempfile.mkdtemp(prefix="tern-interop-")
        self.port = free_port()
        self.data_dir = data_dir or os.path.join(self.folder, "data")
        self.dns_port = dns_port or free_port(socket.SOCK_DGRAM)
        self.config = os.path.join(self.folder, "tern.toml")
        with open(self.config, "w") as f:
            f.write(f'''hostname = "mx.example.test"
data_dir = "{self.data_dir}"

[listen]
smtp = ["127.0.0.1:{self.port}"]
{listen}

[limits]
{limits if "max_connections_per_ip" in limits else "max_connections_per_ip = 500" + chr(10) + limits}

[relay]
trusted_networks = [{trusted}]

[dns]
servers = ["127.0.0.1:{self.dns_port}"]

[delivery]
{delivery}

[[domains]]
name = "example.test"
mailboxes = ["alice", "bob", "postmaster"]
aliases = {{ sales = ["alice", "bob"], team = ["alice", "carol@elsewhere.test"] }}
{extra}
''')
        self.log_path = os.path.join(self.folder, "tern.log")
        self.process = None
        self.keep = False

    def start(self):
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [TERN, "serve", "--config", self.config], stdout=self.log, stderr=self.log,
            stdin=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def signal(self, number):
        self.process.send_signal(number)

    def stop(self, timeout=15):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError("tern did not stop within %ss of SIGTERM" % timeout)
        if self.process:
            self.log.close()
        return self.process.returncode if self.process else None

    def kill(self):
        self.process.kill()
        self.process.wait()
        self.log.close()

    def cleanup(self):
        if self.process and self.process.poll() is None:
            self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def tern(self, *args, stdin=None, check=True):
        """Runs `tern ARGS --config …` and returns the completed process."""
        result = subprocess.run(
            [TERN, *args, "--config", self.config], input=stdin, capture_output=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(
                f"tern {' '.join(args)} exited {result.returncode}: {result.stderr.decode()}")
        return result

    def config_problems(self):
        """`tern check-config` on this configuration, which must fail: what it printed."""
        result = self.tern("check-config", check=False)
        text = result.stdout.decode() + result.stderr.decode()
        assert result.returncode != 0, text
        return text

    def queue(self):
        return json.loads(self.tern("queue", "list", "--json").stdout)

    def maildir(self, user, domain="example.test"):
        path = os.path.join(self.data_dir, "mail", domain, user, "new")
        if not os.path.isdir(path):
            return []
        messages = []
        for name in sorted(os.listdir(path)):
            with open(os.path.join(path, name), "rb") as f:
                messages.append(f.read())
        return messages

    def wait_for_maildir(self, user, count, timeout=15.0, domain="example.test"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.maildir(user, domain)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"maildir {user}@{domain}: {len(self.maildir(user, domain))} messages, "
                             f"expected {count}")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        """Stops the server; the folder stays until `cleanup` (tools may still run offline)."""
        try:
            code = self.stop()
            assert code == 0, f"tern exited {code} after SIGTERM"
        except BaseException:
            if exc[0] is None:
                print("---- tern log ----\n" + self.read_log()[-6000:])
                raise
        finally:
            if exc[0] is not None:
                print("---- tern log ----\n" + self.read_log()[-6000:])
            if not self.keep:
                self.cleanup()
