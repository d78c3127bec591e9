"""
The IMAP4rev1 protocol (RFC 3501) with IDLE, UIDPLUS, MOVE, UNSELECT,
SPECIAL-USE, NAMESPACE, ID, ENABLE, LITERAL+, APPENDLIMIT and CONDSTORE:
connection state, login, timeouts and dispatch.  The mailbox commands are
in L{trekmail.imap.commands}.

This replaces C{twisted.mail.imap4.IMAP4Server} rather than subclassing
it.  Its parser has no C{{n+}} literals and no way to refuse an APPEND
literal before buffering it; its IDLE ends on any line; it writes after
every FETCH item; its C{IMailbox} shares one numbering among sessions and
cannot report another session's EXPUNGE; and UID is only allowed for
COPY, FETCH, STORE and SEARCH (not MOVE or EXPUNGE).  Each of these is a
requirement of the issue, and together they are most of the class.  What
still fits is reused: C{twisted.cred} for login, and the TLS transports.
"""

import base64
import errno
import ipaddress
import re
import sqlite3

from twisted.cred.credentials import UsernamePassword
from twisted.internet import defer, protocol, task
from twisted.logger import Logger
from twisted.python import failure
from twisted.cred.portal import IRealm
from zope.interface import Interface, implementer

from trekmail.imap import parser, refusals
from trekmail.imap.cluster import Solo
from trekmail.imap.clusterlink import Handoff, Unavailable
from trekmail.imap.commands import MailboxCommands
from trekmail.imap.limits import MAXIMUM_EXCEEDED
from trekmail.imap.parser import ProtocolError
from trekmail.imap.responses import tagged
from trekmail.imap.sessions import Sessions
from trekmail import maillog, sasl
from trekmail.plans import plan_named
from trekmail.policy.logins import Busy, Failed, Throttled
from trekmail.realm.errors import DirectoryUnavailable

PRE_LOGIN_TIMEOUT = 60
LOGGED_IN_TIMEOUT = 30 * 60
BASE_CAPABILITIES = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE"
SESSION_CAPABILITIES = "UIDPLUS MOVE UNSELECT SPECIAL-USE CONDSTORE CHILDREN"
_TAG_SPECIALS = re.compile(r'[(){%*"\\]')


class IMailUser(Interface):
    """Avatar interface of an IMAP login: the avatar is the lowercased address."""


@implementer(IRealm)
class MailUserRealm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        if IMailUser not in interfaces:
            raise NotImplementedError()
        return IMailUser, avatar_id, lambda: None


class IMAPServer(MailboxCommands, protocol.Protocol):
    log = Logger()

    def __init__(self, factory):
        self.factory = factory
        self.handoff = None
        """Set, before the connection is made, on a session another process handed over."""
        self.framer = parser.Framer(self)
        self.state = "new"
        self.tls = self.secure = factory.implicit_tls
        self.peer = self.slot = self.admission = self.splice = None
        self.account = None
        self.view = None
        self.busy = False
        self.idle_tag = None
        self.continuation = None
        self.enabled = False
        self.timeout = None
        self.paused = False
        self.settling_at_once = False

    # -- connection ---------------------------------------------------
    def connectionMade(self):
        if self.handoff is not None:
            return self._arrived(self.handoff)
        self.peer = getattr(self.transport.getPeer(), "host", "?")
        self.secure = self.tls or self.factory.trusts(self.peer)
        self.slot = self.factory.limits.connect(self.peer)
        if self.slot is None:
            refusals.refuse(self, b"* BYE %s\r\n" % MAXIMUM_EXCEEDED.encode(), "BYE", "connections")
            return
        self.state = "nonauth"
        self.timeout = self.factory.clock.callLater(PRE_LOGIN_TIMEOUT, self._timed_out)
        self.transport.write(b"* OK [CAPABILITY %s] %s IMAP4rev1 ready\r\n"
                             % (self.capabilities().encode(), self.factory.hostname.encode()))

    def connectionLost(self, reason=None):
        self.state = "logout"
        self._release()
        if self.splice is not None:
            self.splice.transport.loseConnection()
        if self.timeout is not None and self.timeout.active():
            self.timeout.cancel()
        self.timeout = None

    def _release(self):
        """Gives back everything the session holds; one step failing (a folder's watch, say) must not keep the rest."""
        view, self.view = self.view, None
        account, self.account = self.account, None
        slot, self.slot = self.slot, None
        admission, self.admission = self.admission, None
        for step, held in ((lambda v: v.close(), view), (self.factory.store.release, account),
                           (self.factory.limits.release, slot), (self.factory.cluster.dismiss, admission)):
            if held is None:
                continue
            try:
                step(held)
            except Exception:
                self.log.failure("releasing {held!r} failed", held=held)

    def _close(self, farewell):
        self.transport.write(farewell)
        self.state = "logout"
        self._release()
        self.transport.loseConnection()

    def _timed_out(self):
        self.timeout = None
        self._close(b"* BYE Autologout; idle for too long\r\n")

    def _touch(self):
        """Once logged in, activity re-arms the idle timeout; before, the login deadline runs from connect."""
        if self.account is not None and self.timeout is not None and self.timeout.active():
            self.timeout.reset(LOGGED_IN_TIMEOUT)

    def capabilities(self):
        words = [BASE_CAPABILITIES]
        if not self.tls and self.state == "nonauth" and self.factory.tls_options is not None:
            words.append("STARTTLS")
        if not self.secure:
            words.append("LOGINDISABLED")
        elif self.state == "nonauth":
            words.append("AUTH=PLAIN")
        if self.account is not None:
            words.append(SESSION_CAPABILITIES)
            words.append("APPENDLIMIT=%d" % self.factory.appendlimit)
        return " ".join(words)

    # -- input --------------------------------------------------------
    def literal_wanted(self, first_line, size, synchronising):
        """Called by the framer for each literal announced: refuse before reading it."""
        tag, name, rest = parser.split_tag(first_line)
        if name == "UID":
            name = rest.partition(b" ")[0].decode("ascii", "replace").upper()
        limit = self.factory.appendlimit if name == "APPEND" and self.account is not None else parser.MAX_LITERAL
        if size > limit:
            self._send(tagged(tag, "NO", "Literal too big (limit %d)" % limit, "TOOBIG" if name == "APPEND" else None))
            return False
        if synchronising:
            self.transport.write(b"+ Ready for literal data\r\n")
        return True

    def dataReceived(self, data):
        if self.splice is not None:
            self.splice.transport.write(data)
            return
        if self.state == "logout":
            return
        self.framer.feed(data)
        if self.framer.backlog() > parser.MAX_PIPELINE and not self.paused:
            self.paused = True
            self.transport.pauseProducing()
        self._process()

    def _process(self):
        while not self.busy and self.state != "logout":
            try:
                segments = self.framer.next_command()
            except parser.BadLiteral as e:
                self._send(tagged(e.tag, "BAD", "Invalid literal size"))
                if e.fatal:
                    self._close(b"* BYE Cannot skip that literal\r\n")
                    return
                continue
            except parser.LineTooLong:
                self._close(b"* BAD Command line too long\r\n* BYE Closing\r\n")
                return
            if segments is None:
                break
            self._touch()
            self._dispatch(segments)
        if self.paused and self.framer.backlog() < parser.MAX_PIPELINE // 2 and self.state != "logout":
            self.paused = False
            self.transport.resumeProducing()

    def _dispatch(self, segments):
        if self.continuation is not None:
            handler, self.continuation = self.continuation, None
            return self._run("*", handler, bytes(segments[0]))
        if self.idle_tag is not None:
            return self._end_idle(segments[0])
        tag, name, rest = parser.split_tag(segments[0])
        if not tag or tag == "*" or tag == "+" or _TAG_SPECIALS.search(tag):
            return self._send(b"* BAD Invalid tag\r\n")
        if not name:
            return self._send(tagged(tag, "BAD", "Missing command"))
        uid = False
        reader = parser.Reader(rest, segments)
        if name == "UID":
            uid = True
            try:
                name = reader.atom().upper()
            except ProtocolError:
                return self._send(tagged(tag, "BAD", "Missing UID command"))
            if name not in ("FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE"):
                return self._send(tagged(tag, "BAD", "Unknown UID command"))
        handler, states = self.COMMANDS.get(name, (None, ()))
        if handler is None:
            return self._send(tagged(tag, "BAD", "Unknown command"))
        if self.state not in states:
            return self._send(tagged(tag, "BAD", "Command not valid in this state"))
        return self._run(tag, getattr(self, handler), tag, reader, uid)

    def _run(self, tag, function, *args):
        self.busy = True
        try:
            result = function(*args)
        except BaseException as e:
            self._failed(tag, e)
            self.busy = False
            return
        if isinstance(result, defer.Deferred):
            self.settling_at_once = True
            result.addBoth(self._settle, tag)
            self.settling_at_once = False
        else:
            self._finished(result)
            self.busy = False

    def _settle(self, result, tag):
        """
        A command's Deferred result, in one callback: each one added costs
        a pass through the chain.  A Deferred that has fired already (the
        work was in memory, or small enough for the reactor thread) leaves
        the next command to the loop in L{_process} that is running it:
        reading on from here would recurse once per pipelined command.
        """
        try:
            if isinstance(result, failure.Failure):
                self._failed(tag, result.value, result)
            else:
                self._finished(result)
        finally:
            if self.settling_at_once:
                self.busy = False
            else:
                self._resume(None)

    def _finished(self, output):
        if output and self.state != "logout":
            self._send(output)

    def _resume(self, _):
        self.busy = False
        if self.state != "logout":
            self._process()

    def _failed(self, tag, error, failure=None):
        if self.state == "logout":
            return
        if isinstance(error, ProtocolError):
            self._send(tagged(tag, "BAD", str(error)))
        elif isinstance(error, DirectoryUnavailable):
            self._send(tagged(tag, "NO", "Directory temporarily unavailable", "UNAVAILABLE"))
        elif isinstance(error, Unavailable):
            self._send(tagged(tag, "NO", "Server busy, try again later", "UNAVAILABLE"))
        elif _out_of_resources(error):
            self.log.error("IMAP command failed for want of resources: {error}", error=error, peer=self.peer)
            self._send(tagged(tag, "NO", "Server busy, try again later", "UNAVAILABLE"))
        else:
            self.log.failure("IMAP command failed", failure, peer=self.peer)
            self._send(tagged(tag, "NO", "Internal error", "SERVERBUG"))

    def _send(self, data):
        if self.state != "logout":
            self.transport.write(data)

    def updates(self, allow_expunge=True):
        if self.view is None:
            return b""
        return b"".join(self.view.updates(allow_expunge))

    def mailbox_changed(self):
        """Called by the folder when another session or delivery changed it."""
        if self.idle_tag is not None and self.view is not None and self.state == "selected":
            out = self.updates()
            if out:
                self.transport.write(out)

    # -- any state ----------------------------------------------------
    def do_CAPABILITY(self, tag, reader, uid):
        self._no_args(reader)
        return b"* CAPABILITY %s\r\n" % self.capabilities().encode() + tagged(tag, "OK", "Capability completed")

    def do_NOOP(self, tag, reader, uid):
        self._no_args(reader)
        if self.view is None or not self.view.folder.poll_due():
            return self.updates() + tagged(tag, "OK", "NOOP completed")
        return self.view.folder.poll().addCallback(
            lambda _: self.updates() + tagged(tag, "OK", "NOOP completed"))

    def do_LOGOUT(self, tag, reader, uid):
        self._no_args(reader)
        self._close(b"* BYE Logging out\r\n" + tagged(tag, "OK", "Logout completed"))

    def do_ID(self, tag, reader, uid):
        reader.rest()
        return b'* ID ("name" "TrekMail")\r\n' + tagged(tag, "OK", "ID completed")

    def _no_args(self, reader):
        if not reader.at_end():
            raise ProtocolError("Unexpected arguments")

    # -- not authenticated --------------------------------------------
    def do_STARTTLS(self, tag, reader, uid):
        self._no_args(reader)
        if self.tls or self.factory.tls_options is None:
            return tagged(tag, "BAD", "TLS already active")
        self.transport.write(tagged(tag, "OK", "Begin TLS negotiation now"))
        del self.framer.buffer[:]
        self.transport.startTLS(self.factory.tls_options)
        self.tls = self.secure = True

    def do_LOGIN(self, tag, reader, uid):
        user, password = reader.astring(), reader.astring()
        self._no_args(reader)
        return self._login(tag, user, password)

    def do_AUTHENTICATE(self, tag, reader, uid):
        mechanism = reader.atom().upper()
        initial = reader.token()
        self._no_args(reader)
        if mechanism != "PLAIN":
            return tagged(tag, "NO", "Unsupported authentication mechanism")
        if not self.secure:
            return tagged(tag, "NO", "Authentication requires TLS", "PRIVACYREQUIRED")
        if initial is None:
            self.continuation = lambda line: self._plain(tag, line)
            return b"+ \r\n"
        return self._plain(tag, initial.encode() if isinstance(initial, str) else initial)

    def _plain(self, tag, response):
        message = response.strip()
        if message == b"*":
            return tagged(tag, "BAD", "Authentication cancelled")
        try:
            user, password = sasl.plain(base64.b64decode(b"" if message == b"=" else message, validate=True))
        except ValueError:
            return tagged(tag, "BAD", "Invalid SASL PLAIN response")
        except sasl.AuthorizationRefused:
            return tagged(tag, "NO", "You may act only as yourself", "AUTHORIZATIONFAILED")
        return self._login(tag, user, password)

    @defer.inlineCallbacks
    def _login(self, tag, user, password):
        if not self.secure:
            return tagged(tag, "NO", "Plaintext login needs TLS (use STARTTLS)", "PRIVACYREQUIRED")
        cluster, portal, credentials = self.factory.cluster, self.factory.portal, UsernamePassword(user, password)
        try:
            _, address, _ = yield maillog.watch_login(self.log, "imap", self.peer, user, cluster.guard.login(
                self.peer, lambda: portal.login(credentials, None, IMailUser)), lambda result: result[1])
        except Throttled:
            self._close(tagged(tag, "NO", "Too many failed logins from your address, try again later", "UNAVAILABLE"))
            return None
        except Busy:
            return tagged(tag, "NO", "Too many logins at once, try again", "UNAVAILABLE")
        except Failed as e:
            return (yield self._login_failed(tag, e.verdict))
        context = yield self.factory.directory.mailbox(address)
        if self.state != "nonauth":
            return None
        if context is None:
            return tagged(tag, "NO", "Authentication failed", "AUTHENTICATIONFAILED")
        admission = yield cluster.admit(context.account.id, address, self.peer, plan_named(context.account.plan))
        if self.state != "nonauth":
            cluster.dismiss(admission and admission.number)
            return None
        if admission is None:
            refusals.refuse(self, tagged(tag, "NO", MAXIMUM_EXCEEDED, "LIMIT"), "NO [LIMIT]", "plan")
            return None
        self.admission = admission.number
        self.factory.limits.logged_in(self.slot)
        if admission.owner != cluster.index:
            return (yield self._hand_off(Handoff(admission.owner, admission.number, tag, address, self.peer,
                                                 self.tls, bytes(self.framer.buffer))))
        account = yield self.factory.store.open_account(address).addErrback(self._not_entered)
        return self._enter(account, tag)

    @defer.inlineCallbacks
    def _login_failed(self, tag, verdict):
        """Held back, or the connection closed, as the server's one throttle says (L{trekmail.policy.logins})."""
        if verdict.delay > 0:
            yield task.deferLater(self.factory.clock, verdict.delay, lambda: None)
        answer = tagged(tag, "NO", "Authentication failed", "AUTHENTICATIONFAILED")
        if verdict.disconnect:
            self._close(answer + b"* BYE Too many failed logins\r\n")
            return None
        return answer

    def _enter(self, account, tag):
        if self.state != "nonauth":
            self.factory.store.release(account)
            return None
        self.account = account
        self.state = "auth"
        self._touch()
        return tagged(tag, "OK", "Logged in", "CAPABILITY " + self.capabilities())

    def _not_entered(self, failure):
        """The account could not be opened: the login did not happen, and its admission goes back."""
        self.factory.cluster.dismiss(self.admission)
        self.admission = None
        return failure

    @defer.inlineCallbacks
    def _hand_off(self, handoff):
        """
        Another process owns this mailbox (see L{trekmail.imap.cluster}):
        the session moves there, and the owner sends the tagged reply.
        The input stays held (C{busy}) until it has gone; if it cannot go,
        the login is refused and the client may simply try again.
        """
        if self.timeout is not None and self.timeout.active():
            self.timeout.cancel()
        try:
            splice = yield self.factory.cluster.hand_off(self, handoff)
        except Exception as e:
            self.log.warn("IMAP session could not move to process {owner}: {error}", owner=handoff.owner, error=e)
            self.factory.cluster.dismiss(self.admission)
            self.admission = None
            self.timeout = self.factory.clock.callLater(PRE_LOGIN_TIMEOUT, self._timed_out)
            return tagged(handoff.tag, "NO", "Server busy, try again later", "UNAVAILABLE")
        self.admission = None
        unparsed = bytes(self.framer.buffer)
        del self.framer.buffer[:]
        if splice is None:
            self.state = "logout"
            self._release()
            return None
        self.splice = splice
        self.factory.limits.spliced(self.slot)
        if unparsed:
            splice.transport.write(unparsed)
        self.state = "spliced"
        if self.paused:
            self.paused = False
            self.transport.resumeProducing()
        return None

    def _arrived(self, handoff):
        """A session another process accepted and logged in, handed to us because we own its mailbox."""
        self.peer = handoff.peer
        self.tls = handoff.tls
        self.secure = True
        self.slot = self.factory.limits.adopted()
        self.admission = handoff.admission
        self.state = "nonauth"
        self.timeout = self.factory.clock.callLater(LOGGED_IN_TIMEOUT, self._timed_out)
        self.framer.feed(handoff.pending)
        self.busy = True
        d = self.factory.store.open_account(handoff.address).addErrback(self._not_entered)
        d.addCallback(self._enter, handoff.tag).addBoth(self._settle, handoff.tag)

    # -- IDLE (RFC 2177) ----------------------------------------------
    def do_IDLE(self, tag, reader, uid):
        self._no_args(reader)
        self.idle_tag = tag
        self._touch()
        out = b"+ idling\r\n"
        if self.view is None:
            return out
        self.transport.write(out)
        return self.view.folder.poll().addCallback(lambda _: self.updates() if self.idle_tag else b"")

    def _end_idle(self, line):
        tag, self.idle_tag = self.idle_tag, None
        if bytes(line).strip().upper() != b"DONE":
            return self._send(tagged(tag, "BAD", "Expected DONE"))
        self._send(self.updates() + tagged(tag, "OK", "IDLE terminated"))

    def do_ENABLE(self, tag, reader, uid):
        enabled = []
        for name in reader.rest():
            if isinstance(name, str) and name.upper() == "CONDSTORE":
                self.enable_condstore()
                enabled.append("CONDSTORE")
        return b"* ENABLED %s\r\n" % " ".join(enabled).encode() + tagged(tag, "OK", "Enabled")

    def do_NAMESPACE(self, tag, reader, uid):
        self._no_args(reader)
        return b'* NAMESPACE (("" ".")) NIL NIL\r\n' + tagged(tag, "OK", "Namespace completed")

    def enable_condstore(self):
        """The first CONDSTORE-enabling command on a selected mailbox also tells its HIGHESTMODSEQ (RFC 7162 3.1)."""
        self.enabled = True
        if self.view is not None and not self.view.condstore:
            self.view.condstore = True
            self._send(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % self.view.folder.highestmodseq)


ANY = ("nonauth", "auth", "selected")
AUTH = ("auth", "selected")
IMAPServer.COMMANDS = {
    "CAPABILITY": ("do_CAPABILITY", ANY), "NOOP": ("do_NOOP", ANY), "LOGOUT": ("do_LOGOUT", ANY),
    "ID": ("do_ID", ANY), "STARTTLS": ("do_STARTTLS", ("nonauth",)), "LOGIN": ("do_LOGIN", ("nonauth",)),
    "AUTHENTICATE": ("do_AUTHENTICATE", ("nonauth",)), "IDLE": ("do_IDLE", AUTH),
    "ENABLE": ("do_ENABLE", AUTH), "NAMESPACE": ("do_NAMESPACE", AUTH),
    "SELECT": ("do_SELECT", AUTH), "EXAMINE": ("do_EXAMINE", AUTH), "CREATE": ("do_CREATE", AUTH),
    "DELETE": ("do_DELETE", AUTH), "RENAME": ("do_RENAME", AUTH), "SUBSCRIBE": ("do_SUBSCRIBE", AUTH),
    "UNSUBSCRIBE": ("do_UNSUBSCRIBE", AUTH), "LIST": ("do_LIST", AUTH), "LSUB": ("do_LSUB", AUTH),
    "STATUS": ("do_STATUS", AUTH), "APPEND": ("do_APPEND", AUTH),
    "CHECK": ("do_CHECK", ("selected",)), "CLOSE": ("do_CLOSE", ("selected",)),
    "UNSELECT": ("do_UNSELECT", ("selected",)), "EXPUNGE": ("do_EXPUNGE", ("selected",)),
    "SEARCH": ("do_SEARCH", ("selected",)), "FETCH": ("do_FETCH", ("selected",)),
    "STORE": ("do_STORE", ("selected",)), "COPY": ("do_COPY", ("selected",)),
    "MOVE": ("do_MOVE", ("selected",)),
}


_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOSPC}


def _out_of_resources(error):
    """
    A failure that says nothing about the client's command, only that the
    server is out of descriptors, memory or disk (sqlite reports a
    descriptor shortage as "unable to open"), or that a mailbox index is
    locked by something else: the client should retry later, not report
    a server bug.
    """
    if isinstance(error, OSError):
        return error.errno in _EXHAUSTED
    return isinstance(error, sqlite3.OperationalError) and str(error) in (
        "unable to open database file", "database or disk is full", "database is locked")


class IMAPFactory(protocol.ServerFactory):
    """Everything sessions share: login portal, directory, mail store, caps and the clock."""

    def __init__(self, *, portal, directory, store, limits, clock, hostname, tls_options=None,
                 implicit_tls=False, appendlimit=50 * 1024 * 1024, trusted_networks=(), cluster=None, sessions=None):
        self.portal = portal
        self.directory = directory
        self.store = store
        self.limits = limits
        self.cluster = cluster if cluster is not None else Solo(limits, reactor=clock)
        self.clock = clock
        self.hostname = hostname
        self.tls_options = tls_options
        self.implicit_tls = implicit_tls
        self.appendlimit = appendlimit
        self.trusted_networks = tuple(trusted_networks)
        self.sessions = sessions if sessions is not None else Sessions()

    def trusts(self, host):
        """
        Whether a client at C{host} may send a password without TLS
        (C{[imap] trusted_networks}): loopback or a webmail front end on a
        network the operator vouches for, as Dovecot's
        C{login_trusted_networks}.  Empty (the default) trusts no one.
        """
        if not self.trusted_networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted_networks)

    def buildProtocol(self, addr):
        return self.sessions.track(IMAPServer(self))

    def adoption(self, handoff):
        """A factory for the one session C{handoff} brings from another process."""
        return _Adoption(self, handoff)


class _Adoption(protocol.Factory):
    def __init__(self, factory, handoff):
        self.factory = factory
        self.handoff = handoff

    def buildProtocol(self, addr):
        session = self.factory.buildProtocol(addr)
        session.handoff = self.handoff
        return session
