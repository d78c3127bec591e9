"""
A real Dovecot (Debian's C{dovecot-imapd}, listed in bin/test) for the
import tests: its own configuration file under the test's directory,
passwd-file users, Maildir mail there too, listening on 127.0.0.1 only,
with C{/} as its hierarchy delimiter so that the import's translation to
TrekMail's C{.} is exercised.  Run as the current user; as root, Dovecot
insists its login and mail processes run as its own unprivileged users.
"""

import imaplib
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from tests.server_process import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

CONFIG = """\
base_dir = {run}
state_dir = {dir}/state
log_path = {dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={dir}/home/%u
}}
mail_location = maildir:{dir}/home/%u/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


class Dovecot:
    def __init__(self, testcase, users):
        # Everything in a directory of its own in /tmp: its sockets' paths must fit a socket address (108
        # bytes), and as root its unprivileged processes must reach the files, which trial's 0700 directories forbid.
        self.dir = tempfile.mkdtemp(prefix="trekmail-dovecot-")
        os.chmod(self.dir, 0o755)
        testcase.addCleanup(shutil.rmtree, self.dir, True)
        self.port = free_port()
        os.makedirs(os.path.join(self.dir, "home"))
        if os.getuid() == 0:
            mail = pwd.getpwnam("dovecot")
            names = dict(internal="dovecot", internal_group="dovecot", login="dovenull",
                         uid=mail.pw_uid, gid=mail.pw_gid)
            os.chown(os.path.join(self.dir, "home"), mail.pw_uid, mail.pw_gid)
        else:
            me = pwd.getpwuid(os.getuid())
            group = subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()
            names = dict(internal=me.pw_name, internal_group=group, login=me.pw_name, uid=me.pw_uid, gid=me.pw_gid)
        with open(os.path.join(self.dir, "passwd"), "w") as f:
            for user, password in users.items():
                f.write("%s:{PLAIN}%s\n" % (user, password))
        self.config = os.path.join(self.dir, "dovecot.conf")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(dir=self.dir, run=os.path.join(self.dir, "run"), port=self.port, **names))
        self.process = subprocess.Popen([DOVECOT, "-F", "-c", self.config], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
        testcase.addCleanup(self.stop)
        self._wait()

    def _wait(self, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError("dovecot exited: %s" % (self.process.stdout.read().decode(errors="replace"),))
            try:
                imaplib.IMAP4("127.0.0.1", self.port, timeout=2).logout()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("dovecot never listened on %d" % (self.port,))
                time.sleep(0.05)

    def connect(self, user, password):
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
        client.login(user, password)
        return client

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
