"""
A real C{twistd -n trekmail} process for the tests where start-up,
crash or restart behaviour is the point.
"""

import os
import random
import signal
import socket
import subprocess
import sys

from twisted.internet import defer, reactor, task

from tests.support import REPO


TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]


_handed_out = set()


def free_port():
    """
    A port for a server started in another process.  Taken below the
    kernel's ephemeral range (32768 and up), so the outgoing connections
    of tests running in parallel cannot grab it before the server binds;
    never one this process handed out before, so one server's listeners
    (none bound yet) cannot be given the same port twice.
    """
    while True:
        port = random.randrange(20000, 32000)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def run_twistd(config_path, timeout=30):
    """Run to completion (for configurations that must be refused)."""
    return subprocess.run(
        TWISTD + ["trekmail", "--config", config_path],
        capture_output=True, text=True, cwd=REPO, timeout=timeout,
    )


def _accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class ServerProcess:
    def __init__(self, testcase, config_path):
        self.config_path = config_path
        self.log_path = os.path.join(os.path.dirname(config_path), "twistd.log")
        self.process = None
        testcase.addCleanup(self.stop)

    @defer.inlineCallbacks
    def start(self, ports, timeout=30):
        """Start, and fire once every port in C{ports} accepts connections."""
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            TWISTD + ["trekmail", "--config", self.config_path],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )
        log.close()
        deadline = reactor.seconds() + timeout
        waiting = list(ports)
        while waiting:
            if self.process.poll() is not None:
                raise AssertionError("twistd exited %s:\n%s" % (self.process.returncode, self.log()))
            if reactor.seconds() > deadline:
                raise AssertionError("ports %s never opened:\n%s" % (waiting, self.log()))
            waiting = [p for p in waiting if not _accepts(p)]
            if waiting:
                yield task.deferLater(reactor, 0.1, lambda: None)

    @defer.inlineCallbacks
    def wait_for_log(self, text, timeout=30):
        deadline = reactor.seconds() + timeout
        while text not in self.log():
            if self.process.poll() is not None or reactor.seconds() > deadline:
                raise AssertionError("no %r in the log:\n%s" % (text, self.log()))
            yield task.deferLater(reactor, 0.1, lambda: None)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
