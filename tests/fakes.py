"""
The test doubles the doors are driven with, one of each, every one with
switches that make it fail or hold the way a real backend does (as
maddy's test targets have StartErr, RcptErr and CommitErr): a directory
that can be down, a queue whose spool can be full, a password checker
and an IMAP mail store that can fail, and a StringTransport that can
start TLS.
"""

from types import SimpleNamespace

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.interfaces import ITLSTransport
from twisted.cred.portal import Portal
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from trekmail.queue.interface import IMessageQueue, SpoolError
from trekmail.realm.errors import DirectoryUnavailable
from trekmail.realm.model import Account, Domain, Mailbox, MailboxContext
from trekmail.smtp.submission import SubmissionFactory


class FakeDirectory:
    """
    Hosted domains and mailboxes from dicts: C{domain()} answers
    C{(Domain, Account)}, C{mailbox()} a L{MailboxContext}, both of
    account 1 on C{plan}.

    Switches: C{unavailable} makes every lookup fail with
    L{DirectoryUnavailable}, C{fail_on} (a set of names) only the lookups
    of those; C{held} (a list) keeps every answer until L{release};
    C{every_mailbox} makes any address a mailbox, added as it is asked
    for.  C{aliases} maps an alias to its mailboxes (none by default).
    """

    def __init__(self, domains=(), mailboxes=(), plan="starter", every_mailbox=False):
        self.plan = plan
        self.every_mailbox = every_mailbox
        self.domains = {}
        self.mailboxes = {}
        self.aliases = {}
        self.unavailable = False
        self.fail_on = set()
        self.held = None
        for name in domains:
            self.add_domain(name)
        for address in mailboxes:
            self.add_mailbox(address)

    def add_domain(self, name, created=0.0, plan=None, route=None, selector="dkim", public_key="", catchall=None):
        account = Account(1, "owner@" + name, True, None, plan or self.plan, True, None)
        self.domains[name] = (Domain(name, 1, created, selector, public_key, "verified", route, catchall), account)

    def add_mailbox(self, address):
        address = address.lower()
        name = address.rpartition("@")[2]
        if name not in self.domains:
            self.add_domain(name)
        domain, account = self.domains[name]
        self.mailboxes[address] = MailboxContext(Mailbox(address, name, "", False), domain, account)

    def domain(self, name):
        return self._answer(name, lambda: self.domains.get(name))

    def mailbox(self, address):
        def find():
            if self.every_mailbox and address.lower() not in self.mailboxes:
                self.add_mailbox(address)
            return self.mailboxes.get(address.lower())
        return self._answer(address, find)

    def alias(self, address):
        return self._answer(address, lambda: self.aliases.get(address))

    def _answer(self, name, find):
        if self.unavailable or name in self.fail_on:
            return defer.fail(DirectoryUnavailable("down"))
        value = find()
        if self.held is not None:
            d = defer.Deferred()
            self.held.append((d, value))
            return d
        return defer.succeed(value)

    def release(self):
        held, self.held = self.held, None
        for d, value in held:
            d.callback(value)


@implementer(IMessageQueue)
class FakeQueue:
    """
    Records what is enqueued.  Switches: C{fail} makes L{enqueue} fail
    with L{SpoolError} (a full disk); C{held} (a list) keeps each
    C{(envelope, message, Deferred)} unanswered.
    """

    def __init__(self):
        self.messages = []
        self.traces = []
        """What each C{trace} gave, kept apart so the messages are as the door passed them."""
        self.fail = False
        self.held = None

    def enqueue(self, envelope, message, trace=None):
        if self.fail:
            return defer.fail(SpoolError("disk full"))
        if trace is not None:
            self.traces.append(trace("Q%d" % (len(self.messages) + 1,)))
        if self.held is not None:
            d = defer.Deferred()
            self.held.append((envelope, message, d))
            return d
        self.messages.append((envelope, message))
        return defer.succeed("Q%d" % (len(self.messages),))


@implementer(ICredentialsChecker)
class FakeChecker:
    """
    Any username with password C{pw}, its avatar id the lowercased name.
    Switches: C{unavailable} makes every check fail with
    L{DirectoryUnavailable}; C{held} (a list) keeps every answer until
    L{release}, so that several checks can be in progress at once.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self):
        self.unavailable = False
        self.held = None

    def requestAvatarId(self, credentials):
        if self.unavailable:
            answer = defer.fail(DirectoryUnavailable("down"))
        elif credentials.password != b"pw":
            answer = defer.fail(UnauthorizedLogin())
        else:
            answer = defer.succeed(credentials.username.decode().lower())
        if self.held is None:
            return answer
        d = defer.Deferred()
        self.held.append((d, answer))
        return d

    def release(self):
        held, self.held = self.held, []
        for d, answer in held:
            answer.chainDeferred(d)


class FakeStore:
    """An IMAP mail store counting the accounts open; C{error} (an exception) makes opening one fail with it."""

    def __init__(self):
        self.open = 0
        self.error = None

    def open_account(self, address):
        if self.error is not None:
            return defer.fail(self.error)
        self.open += 1
        return defer.succeed(SimpleNamespace(address=address))

    def release(self, account):
        self.open -= 1


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    tls_started_with = None

    def startTLS(self, context):
        self.tls_started_with = context


def replies(transport):
    """The reply lines written so far, as text, and clear the transport."""
    lines = transport.value().decode("utf-8").split("\r\n")
    transport.clear()
    return [line for line in lines if line]


def login_only_submission(realm, checker, clock, logins, implicit_tls=True):
    """A L{SubmissionFactory} for tests of AUTH alone: no directory or tally, a L{FakeQueue}."""
    return SubmissionFactory(
        portal=Portal(realm, [checker]), directory=None, tally=None, queue=FakeQueue(), clock=clock,
        hostname="mail.test", tls_options=object(), logins=logins, implicit_tls=implicit_tls,
    )
