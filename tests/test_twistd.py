"""Start-up of the real C{twistd} plugin: refusals and the self-signed identity."""

import os
import socket
import stat
import subprocess

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tests.server_process import TWISTD, ServerProcess, free_port, run_twistd
from tests.support import REPO, write_config


class RefusedConfigurationTests(unittest.TestCase):
    def assertRefused(self, config_path, *words):
        process = run_twistd(config_path)
        self.assertNotEqual(process.returncode, 0)
        output = process.stdout + process.stderr
        self.assertNotIn("Traceback", output)
        lines = [line for line in output.splitlines() if "configuration error" in line]
        self.assertEqual(len(lines), 1, output)
        for word in words:
            self.assertIn(word, lines[0])

    def test_unknown_key(self):
        self.assertRefused(write_config(self.mktemp(), "[relay]\nmx_prot = 25\n"), "[relay] mx_prot", "unknown key")

    def test_unparsable_endpoint(self):
        self.assertRefused(write_config(self.mktemp(), imaps="tcp:not-a-port"), "[listen] imaps")

    def test_unknown_endpoint_type(self):
        self.assertRefused(write_config(self.mktemp(), mx="carrier-pigeon:25"), "[listen] mx")

    def test_unreadable_certificate(self):
        path = write_config(self.mktemp())
        tls = os.path.join(os.path.dirname(path), "var", "tls")
        os.makedirs(tls)
        with open(os.path.join(tls, "key.pem"), "w") as f:
            f.write("not a key\n")
        self.assertRefused(path, "[tls] certificate")

    def test_port_in_use(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            path = write_config(self.mktemp(), mx="tcp:%d:interface=127.0.0.1" % (port,))
            self.assertRefused(path, "[listen] mx", "in use")

    def test_missing_config_file(self):
        self.assertRefused(os.path.abspath(self.mktemp()), "cannot read")


class StartupTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_first_start_with_every_door_logs_no_warning(self):
        ports = {name: free_port() for name in ("submissions", "submission", "mx", "imaps", "imap", "https", "admin")}
        path = write_config(self.mktemp(), **{n: "tcp:%d:interface=127.0.0.1" % p for n, p in ports.items()})
        server = ServerProcess(self, path)
        yield server.start(ports.values())
        yield server.wait_for_log("trekmail started")
        server.stop()
        for mark in ("#warn]", "#error]", "#critical]", "Traceback"):
            self.assertNotIn(mark, server.log())

    @defer.inlineCallbacks
    def test_generates_certificate_once(self):
        path = write_config(self.mktemp())
        cert = os.path.join(os.path.dirname(path), "var", "tls", "cert.pem")
        key = os.path.join(os.path.dirname(path), "var", "tls", "key.pem")
        server = ServerProcess(self, path)
        yield server.start([])
        yield server.wait_for_log("trekmail started")
        server.stop()
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        with open(cert, "rb") as f:
            first = f.read()
        server = ServerProcess(self, path)
        yield server.start([])
        yield server.wait_for_log("trekmail started")
        server.stop()
        with open(cert, "rb") as f:
            self.assertEqual(f.read(), first)


class PrivateFilesTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_nothing_readable_by_other_users(self):
        """
        With the caller's umask 022, every directory and file the server
        creates under data_dir, and twistd's own log file, is 0700 / 0600
        (the certificate excepted: it is public and made 0644 on purpose).
        """
        path = write_config(self.mktemp(), extra="[admin]\n", mx="tcp:0:interface=127.0.0.1",
                            imap="tcp:0:interface=127.0.0.1")
        directory = os.path.dirname(path)
        log_path = os.path.join(directory, "own.log")
        previous = os.umask(0o022)
        try:
            process = subprocess.Popen(TWISTD + ["--logfile", log_path, "trekmail", "--config", path],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=REPO)
        finally:
            os.umask(previous)
        server = ServerProcess(self, path)
        server.process, server.log_path = process, log_path
        for _ in range(300):
            if os.path.exists(log_path) or process.poll() is not None:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        yield server.wait_for_log("trekmail started")
        server.stop()
        exposed = []
        for root, dirs, files in os.walk(os.path.join(directory, "var")):
            for name in dirs + files:
                full = os.path.join(root, name)
                if name != "cert.pem" and os.stat(full).st_mode & 0o077:
                    exposed.append((full, oct(os.stat(full).st_mode & 0o777)))
        self.assertEqual(stat.S_IMODE(os.stat(log_path).st_mode), 0o600)
        self.assertEqual(exposed, [])
        self.assertGreater(len(os.listdir(os.path.join(directory, "var"))), 2)
