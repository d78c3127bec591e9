"""
Every command and extension of the issue, driven by imaplib over real TLS
against the server on loopback.
"""

import base64
import imaplib
import os
import re

from twisted.internet import defer
from twisted.trial import unittest

from tests.imap_site import PASSWORD, Site, client_context, message
from trekmail.config import Config, ConfigError
from trekmail.imap import commands


def raw(client, line):
    """Sends one tagged command by hand; returns (untagged lines, tagged line)."""
    tag = client._new_tag()
    client.send(tag + b" " + line + b"\r\n")
    untagged = []
    while True:
        got = client.readline()
        if got.startswith(tag + b" "):
            return untagged, got.rstrip(b"\r\n")
        untagged.append(got.rstrip(b"\r\n"))


class LoginTests(unittest.TestCase):
    def setUp(self):
        self.site = Site(self)
        self.site.account()

    @defer.inlineCallbacks
    def test_capabilities_after_login(self):
        def work():
            client = self.site.connect(login=None)
            before = client.capabilities
            client.login("alice@example.com", PASSWORD)
            _, after = client.capability()
            client.logout()
            return before, after[0].split()

        before, after = yield self.site.in_thread(work)
        self.assertIn("AUTH=PLAIN", before)
        self.assertNotIn("STARTTLS", before)
        for word in (b"IDLE", b"UIDPLUS", b"MOVE", b"UNSELECT", b"SPECIAL-USE", b"NAMESPACE", b"ID",
                     b"ENABLE", b"LITERAL+", b"CONDSTORE"):
            self.assertIn(word, after)
        self.assertIn(b"APPENDLIMIT=1048576", after)
        self.assertNotIn(b"AUTH=PLAIN", after)

    @defer.inlineCallbacks
    def test_starttls_port(self):
        def work():
            client = self.site.connect(login=None, port="imap")
            before = client.capabilities
            refused = raw(client, b'LOGIN "alice@example.com" "correct horse"')[1]
            client.starttls(ssl_context=client_context())
            after = client.capabilities
            client.login("alice@example.com", PASSWORD)
            client.logout()
            return before, refused, after

        before, refused, after = yield self.site.in_thread(work)
        self.assertIn("STARTTLS", before)
        self.assertIn("LOGINDISABLED", before)
        self.assertNotIn("AUTH=PLAIN", before)
        self.assertIn(b"NO [PRIVACYREQUIRED]", refused)
        self.assertNotIn("LOGINDISABLED", after)
        self.assertIn("AUTH=PLAIN", after)

    @defer.inlineCallbacks
    def test_bad_logins(self):
        def work():
            client = self.site.connect(login=None)
            results = []
            for user, password in (("alice@example.com", "wrong"), ("alice", PASSWORD),
                                   ("nobody@example.com", PASSWORD)):
                try:
                    client.login(user, password)
                    results.append("accepted")
                except imaplib.IMAP4.error as e:
                    results.append(str(e))
            client.logout()
            return results

        results = yield self.site.in_thread(work)
        self.assertEqual(len(results), 3)
        for result in results:
            self.assertIn("[AUTHENTICATIONFAILED]", result)

    @defer.inlineCallbacks
    def test_authenticate_plain_and_paused_mailbox(self):
        self.site.admin.mailbox_pause("alice@example.com")

        def work():
            client = self.site.connect(login=None)
            typ, _ = client.authenticate("PLAIN", lambda _: b"\0alice@example.com\0" + PASSWORD.encode())
            typ2, data = client.select("INBOX")
            client.logout()
            return typ, typ2

        self.assertEqual((yield self.site.in_thread(work)), ("OK", "OK"))


class TrustedNetworkTests(unittest.TestCase):
    """C{[imap] trusted_networks}: plaintext login on the C{imap} listener from a listed network only."""

    def setUp(self):
        self.site = Site(self, trusted_networks="127.0.0.2/32, 10.0.0.0/8")
        self.site.account()

    @defer.inlineCallbacks
    def test_trusted_source_logs_in_without_tls(self):
        def work():
            client = self.site.connect_from("127.0.0.2", login=None, port="imap")
            before = client.capabilities
            client.login("alice@example.com", PASSWORD)
            selected, _ = client.select("INBOX")
            client.logout()
            other = self.site.connect_from("127.0.0.2", login=None, port="imap")
            typ, _ = other.authenticate("PLAIN", lambda _: b"\0alice@example.com\0" + PASSWORD.encode())
            other.logout()
            return before, selected, typ

        before, selected, typ = yield self.site.in_thread(work)
        self.assertIn("STARTTLS", before)
        self.assertIn("AUTH=PLAIN", before)
        self.assertNotIn("LOGINDISABLED", before)
        self.assertEqual((selected, typ), ("OK", "OK"))

    @defer.inlineCallbacks
    def test_untrusted_source_still_needs_tls(self):
        def work():
            client = self.site.connect_from("127.0.0.3", login=None, port="imap")
            before = client.capabilities
            refused = raw(client, b'LOGIN "alice@example.com" "correct horse"')[1]
            refused_sasl = raw(client, b"AUTHENTICATE PLAIN " + base64.b64encode(
                b"\0alice@example.com\0" + PASSWORD.encode()))[1]
            client.starttls(ssl_context=client_context())
            client.login("alice@example.com", PASSWORD)
            client.logout()
            return before, refused, refused_sasl

        before, refused, refused_sasl = yield self.site.in_thread(work)
        self.assertIn("LOGINDISABLED", before)
        self.assertNotIn("AUTH=PLAIN", before)
        self.assertIn(b"NO [PRIVACYREQUIRED]", refused)
        self.assertIn(b"NO [PRIVACYREQUIRED]", refused_sasl)

    def test_default_trusts_no_one(self):
        networks = Config.from_text("").get("imap", "trusted_networks")
        self.assertEqual(networks, ())
        factory = self.site.factories["imap"]
        self.assertTrue(factory.trusts("127.0.0.2"))
        self.assertTrue(factory.trusts("::ffff:10.1.2.3"))
        self.assertFalse(factory.trusts("127.0.0.1"))
        self.assertFalse(factory.trusts("?"))

    def test_bad_network_is_a_config_error(self):
        error = self.assertRaises(ConfigError, Config.from_text, "[imap]\ntrusted_networks = 10.0.0.0/33\n")
        self.assertIn("trusted_networks", str(error))


class MailboxTests(unittest.TestCase):
    def setUp(self):
        self.site = Site(self)
        self.site.account()

    def run_client(self, work):
        def wrapper():
            client = self.site.connect()
            try:
                return work(client)
            finally:
                client.logout()
        return self.site.in_thread(wrapper)

    @defer.inlineCallbacks
    def test_special_use_folders_created_on_first_login(self):
        def work(client):
            return client.list()[1], client.namespace()[1], raw(client, b'ID ("name" "test")')

        listing, namespace, identity = yield self.run_client(work)
        text = b"\n".join(listing)
        for name, use in ((b"Sent", b"\\Sent"), (b"Drafts", b"\\Drafts"), (b"Trash", b"\\Trash"),
                          (b"Junk", b"\\Junk"), (b"Archive", b"\\Archive")):
            self.assertRegex(text, re.escape(use) + rb'\) "\." "' + name + b'"')
        self.assertIn(b'"INBOX"', text)
        self.assertEqual(namespace, [b'(("" ".")) NIL NIL'])
        self.assertIn(b"TrekMail", identity[0][0])
        self.assertIn(b"OK", identity[1])

    @defer.inlineCallbacks
    def test_create_rename_delete_subscribe(self):
        def work(client):
            out = [client.create("Projects.2026")[0], client.create("Projects")[0]]
            client.subscribe("Projects")
            client.subscribe("Projects.2026")
            out.append(client.rename("Projects", "Work")[0])
            out.append(client.list('""', "Work*")[1])
            out.append(client.unsubscribe("Work.2026")[0])
            out.append(client.lsub('""', "Work*")[1])
            out.append(client.delete("Work")[0])
            out.append(client.delete("Work.2026")[0])
            out.append(client.delete("Work")[0])
            out.append(client.list('""', "Work*")[1])
            out.append(client.select("Nope")[0])
            client.append("INBOX", None, None, message("old"))
            out.append(client.rename("INBOX", "Old")[0])
            out.append(client.status("Old", "(MESSAGES UIDNEXT)")[1])
            out.append(client.status("INBOX", "(MESSAGES UIDNEXT)")[1])
            return out

        out = yield self.run_client(work)
        self.assertEqual(out[:2], ["OK", "NO"])
        self.assertEqual(out[2], "OK")
        self.assertEqual(len(out[3]), 2)
        self.assertIn(b"\\HasChildren", out[3][0])
        self.assertEqual(out[4], "OK")
        self.assertEqual(len(out[5]), 1)
        self.assertEqual(out[6:9], ["NO", "OK", "OK"])
        self.assertEqual(out[9], [None])
        self.assertEqual(out[10], "NO")
        self.assertEqual(out[11], "OK", "renaming INBOX moves its mail and leaves it empty")
        self.assertEqual(out[12], [b'"Old" (MESSAGES 1 UIDNEXT 2)'])
        self.assertEqual(out[13], [b'"INBOX" (MESSAGES 0 UIDNEXT 2)'])

    @defer.inlineCallbacks
    def test_append_fetch_store_search(self):
        def work(client):
            out = {}
            out["append"] = client.append("INBOX", "(\\Flagged $Work)", '"21-Nov-2026 13:00:00 +0100"',
                                          message("first"))
            client.append("INBOX", None, None, message("second", body="needle in here\r\n"))
            out["select"] = client.select("INBOX")
            out["fetch"] = client.fetch("1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")
            out["header"] = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (Subject)] BODY.PEEK[TEXT]<0.2>)")
            out["body"] = client.fetch("2", "(BODY[])")
            out["seen"] = client.fetch("2", "(FLAGS)")
            out["store"] = client.store("1", "-FLAGS", "(\\Flagged)")
            out["silent"] = client.store("1", "+FLAGS.SILENT", "(\\Answered)")
            out["search"] = client.search(None, "BODY", "needle")
            out["uidsearch"] = client.uid("SEARCH", None, "ANSWERED")
            out["search_or"] = client.search(None, "OR", "SUBJECT", "first", "LARGER", "100000")
            out["search_date"] = client.search(None, "SINCE", "1-Nov-2026", "NOT", "SEEN")
            out["uid_fetch"] = client.uid("FETCH", "2", "(FLAGS)")
            out["structure"] = client.fetch("1", "(BODYSTRUCTURE)")
            return out

        out = yield self.run_client(work)
        self.assertEqual(out["append"][0], "OK")
        self.assertRegex(out["append"][1][0], rb"^\[APPENDUID \d+ 1\]")
        self.assertEqual(out["select"], ("OK", [b"2"]))
        first = out["fetch"][1][0]
        self.assertIn(b"FLAGS ($Work \\Flagged \\Recent)", first)
        self.assertIn(b'INTERNALDATE "21-Nov-2026 12:00:00 +0000"', first)
        self.assertIn(b'"first"', first)
        self.assertEqual(out["header"][1][0][1], b"Subject: first\r\n\r\n")
        self.assertEqual(out["header"][1][1][1], b"Hi")
        self.assertEqual(out["body"][1][0][1], message("second", body="needle in here\r\n")[:0] + out["body"][1][0][1])
        self.assertTrue(out["body"][1][0][1].endswith(b"needle in here\r\n"))
        self.assertIn(b"\\Seen", out["seen"][1][0])
        self.assertEqual(out["store"][1], [b"1 (FLAGS ($Work \\Recent))"])
        self.assertEqual(out["silent"][1], [None])
        self.assertEqual(out["search"][1], [b"2"])
        self.assertEqual(out["uidsearch"][1], [b"1"])
        self.assertEqual(out["search_or"][1], [b"1"])
        self.assertEqual(out["search_date"][1], [b"1"])
        self.assertIn(b"UID 2 FLAGS (\\Recent \\Seen)", out["uid_fetch"][1][0])
        self.assertIn(b'("TEXT" "PLAIN" ("CHARSET" "us-ascii")', out["structure"][1][0])

    @defer.inlineCallbacks
    def test_copy_move_expunge_uidplus(self):
        def work(client):
            for i in range(4):
                client.append("INBOX", None, None, message("m%d" % i))
            client.select("INBOX")
            out = {}
            out["copy"] = raw(client, b"UID COPY 1:2 Archive")
            out["move"] = client.uid("MOVE", "3", "Trash")
            client.store("1:2", "+FLAGS", "(\\Deleted)")
            out["uid_expunge"] = raw(client, b"UID EXPUNGE 2")
            out["left"] = client.uid("SEARCH", None, "ALL")
            out["expunge"] = client.expunge()
            out["check"] = client.check()
            out["status"] = client.status("Archive", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)")
            out["trash"] = client.status("Trash", "(MESSAGES)")
            out["nowhere"] = client.uid("COPY", "4", "Nowhere")
            out["unselect"] = raw(client, b"UNSELECT")[1]
            out["examine"] = client.select("Archive", readonly=True)
            out["readonly_store"] = raw(client, b"STORE 1 +FLAGS (\\Seen)")[1]
            out["close"] = client.close()
            return out

        out = yield self.run_client(work)
        self.assertRegex(out["copy"][1], rb" OK \[COPYUID \d+ 1:2 1,2\]")
        self.assertEqual(out["move"][0], "OK")
        self.assertEqual(out["uid_expunge"][0], [b"* 2 EXPUNGE"])
        self.assertEqual(out["left"][1], [b"1 4"])
        self.assertEqual(out["expunge"][1], [b"3", b"1"], "the MOVE's EXPUNGE, then the EXPUNGE's")
        self.assertRegex(out["status"][1][0], rb'"Archive" \(MESSAGES 2 UIDNEXT 3 UIDVALIDITY \d+ UNSEEN 2 '
                                              rb'HIGHESTMODSEQ \d+\)')
        self.assertIn(b"MESSAGES 1", out["trash"][1][0])
        self.assertEqual(out["check"][0], "OK")
        self.assertEqual(out["nowhere"][0], "NO")
        self.assertIn(b"OK", out["unselect"])
        self.assertEqual(out["examine"][0], "OK")
        self.assertIn(b"NO [READ-ONLY]", out["readonly_store"])
        self.assertEqual(out["close"][0], "OK")

    @defer.inlineCallbacks
    def test_condstore(self):
        def work(client):
            client.append("INBOX", None, None, message("a"))
            client.append("INBOX", None, None, message("b"))
            out = {"enable": raw(client, b"ENABLE CONDSTORE")}
            out["select"] = raw(client, b"SELECT INBOX (CONDSTORE)")
            out["store"] = raw(client, b"STORE 1 +FLAGS (\\Flagged)")
            modseq = int(re.search(rb"MODSEQ \((\d+)\)", out["store"][0][0]).group(1))
            out["changed"] = raw(client, b"FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % (modseq - 1))
            out["conditional"] = raw(client, b"STORE 1:2 (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % (modseq - 1))
            out["search"] = raw(client, b"SEARCH MODSEQ %d" % modseq)
            return out

        out = yield self.run_client(work)
        self.assertEqual(out["enable"][0], [b"* ENABLED CONDSTORE"])
        self.assertTrue(any(b"[HIGHESTMODSEQ" in line for line in out["select"][0]))
        self.assertEqual(len(out["changed"][0]), 1)
        self.assertIn(b"MODSEQ", out["changed"][0][0])
        self.assertIn(b"[MODIFIED 1]", out["conditional"][1])
        self.assertTrue(out["search"][0][0].startswith(b"* SEARCH 1 2 (MODSEQ"))

    @defer.inlineCallbacks
    def test_fetch_and_search_beyond_one_read_chunk(self):
        count = commands.READ_CHUNK * 2 + 5

        def work(client):
            pipelined = b""
            for i in range(count):
                data = message("m%d" % i, body="number %d\r\n" % i)
                pipelined += b"p%d APPEND INBOX {%d+}\r\n%s\r\n" % (i, len(data), data)
            client.send(pipelined)
            for i in range(count):
                while not client.readline().startswith(b"p%d " % i):
                    pass
            client.select("INBOX")
            bodies = client.fetch("1:*", "(BODY.PEEK[TEXT])")[1]
            found = client.search(None, "BODY", '"number %d"' % (count - 1))[1]
            return bodies, found

        bodies, found = yield self.run_client(work)
        texts = [item[1] for item in bodies if isinstance(item, tuple)]
        self.assertEqual(texts, [b"number %d\r\n" % i for i in range(count)])
        self.assertEqual(found, [b"%d" % count])

    @defer.inlineCallbacks
    def test_thousands_of_pipelined_commands_that_finish_at_once(self):
        """EXPUNGE with nothing to remove completes within its call: a long pipeline of them must not recurse."""
        count = 5000

        def work(client):
            client.select("INBOX")
            client.send(b"".join(b"e%d EXPUNGE\r\n" % i for i in range(count)) + b"last NOOP\r\n")
            answers = []
            while True:
                line = client.readline()
                if line.startswith((b"e", b"last ")):
                    answers.append(line.split(b" ", 2)[1])
                if line.startswith(b"last ") or not line:
                    return answers

        answers = yield self.run_client(work)
        self.assertEqual(answers, [b"OK"] * (count + 1))

    @defer.inlineCallbacks
    def test_literal_plus_append_and_toobig(self):
        data = message("plus")

        def work(client):
            tag = client._new_tag()
            client.send(tag + b" APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
            plus = client.readline()
            tag2 = client._new_tag()
            client.send(tag2 + b" APPEND INBOX {%d}\r\n" % (2 * 1024 * 1024))
            big = client.readline()
            tag3 = client._new_tag()
            client.send(tag3 + b" APPEND INBOX {-5}\r\n")
            negative = client.readline()
            return plus, big, negative, client.status("INBOX", "(MESSAGES)")[1]

        plus, big, negative, status = yield self.run_client(work)
        self.assertIn(b"OK [APPENDUID", plus)
        self.assertIn(b"NO [TOOBIG]", big)
        self.assertIn(b"BAD", negative)
        self.assertIn(b"MESSAGES 1", status[0])


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class HostileInputTests(unittest.TestCase):
    """Oversized literals and lines over real TLS: refused, and never held in memory."""

    def setUp(self):
        self.site = Site(self)
        self.site.account()

    @defer.inlineCallbacks
    def test_huge_literal_plus_is_skipped_not_stored(self):
        size = 64 * 1024 * 1024
        chunk = b"x" * 65536

        def work():
            client = self.site.connect()
            before = resident_bytes()
            tag = client._new_tag()
            client.send(tag + b" APPEND INBOX {%d+}\r\n" % size)
            for _ in range(size // len(chunk)):
                client.send(chunk)
            client.send(b"\r\n")
            answer = client.readline()
            grown = resident_bytes() - before
            status = client.status("INBOX", "(MESSAGES)")
            client.logout()
            return answer, grown, status

        answer, grown, status = yield self.site.in_thread(work)
        self.assertIn(b"NO [TOOBIG]", answer)
        self.assertLess(grown, 16 * 1024 * 1024, "a 64 MiB literal must not be buffered")
        self.assertIn(b"MESSAGES 0", status[1][0])

    @defer.inlineCallbacks
    def test_endless_line_is_refused_and_closed(self):
        def work():
            client = self.site.connect()
            before = resident_bytes()
            try:
                for _ in range(256):
                    client.send(b"a" * 65536)
            except OSError:
                pass
            lines = []
            while True:
                try:
                    line = client.readline()
                except OSError:
                    break
                if not line:
                    break
                lines.append(line)
            return lines, resident_bytes() - before

        lines, grown = yield self.site.in_thread(work)
        self.assertIn(b"* BAD Command line too long\r\n", lines)
        self.assertLess(grown, 16 * 1024 * 1024)

    @defer.inlineCallbacks
    def test_append_dates_are_checked_as_rfc_3501_writes_them(self):
        def work():
            client = self.site.connect()
            answers = []
            for date in ('" 1-jan-2026 23:59:59 -0730"', '"31-Feb-2026 00:00:00 +0000"',
                         '"21-Nov-2026 24:00:00 +0000"', '"21-Foo-2026 12:00:00 +0000"', '"21-Nov-2026 12:00:00"'):
                try:
                    answers.append(client.append("INBOX", None, date, message("dated"))[0])
                except imaplib.IMAP4.error as e:
                    answers.append(str(e).split(": ")[1].split()[0])
            client.select("INBOX")
            dates = client.fetch("1:*", "(INTERNALDATE)")[1]
            client.logout()
            return answers, dates

        answers, dates = yield self.site.in_thread(work)
        self.assertEqual(answers, ["OK", "BAD", "BAD", "BAD", "BAD"])
        self.assertEqual(len(dates), 1)
        self.assertIn(b'INTERNALDATE "02-Jan-2026 07:29:59 +0000"', dates[0])
