"""RFC 3501 points imaptest's scripted suite found TrekMail missing, each pinned on its own."""

import os
import re

from twisted.trial import unittest

from tests.imap_inline import Session


def _uidvalidity(out):
    return int(re.search(rb"UIDVALIDITY (\d+)", out).group(1))


class UIDValidityTests(unittest.TestCase):
    def test_recreated_name_gets_a_greater_uidvalidity_within_the_second(self):
        """RFC 3501 2.3.1.1: a name deleted and created again must not reuse its UIDVALIDITY."""
        session = Session(self).login(select=False)
        seen = []
        for round in range(3):
            self.assertIn(b"OK", session.command(b"c CREATE box")[1])
            out, _ = session.command(b"s SELECT box")
            seen.append(_uidvalidity(out))
            session.command(b"u UNSELECT")
            self.assertIn(b"OK", session.command(b"d DELETE box")[1])
        self.assertEqual(sorted(set(seen)), seen)


class ExamineTests(unittest.TestCase):
    def test_examine_counts_recent_without_taking_it_and_allows_no_flag_changes(self):
        """RFC 3501 6.3.2: EXAMINE's answer is SELECT's, read-only; \\Recent stays for the next SELECT."""
        session = Session(self).login(select=False)
        for n in range(2):
            with open(os.path.join(session.root(), "new", "100.M%06dP1Q%d.h" % (n, n)), "wb") as f:
                f.write(b"Subject: %d\r\n\r\nbody\r\n" % n)
        out, tagged = session.command(b"e EXAMINE INBOX")
        self.assertIn(b"* 2 RECENT", out)
        self.assertIn(b"[PERMANENTFLAGS ()]", out)
        self.assertIn(b"READ-ONLY", tagged)
        out, tagged = session.command(b"s SELECT INBOX")
        self.assertIn(b"* 2 RECENT", out)
        self.assertIn(b"\\*)]", out)


class CondstoreTests(unittest.TestCase):
    def test_first_fetch_modseq_tells_highestmodseq(self):
        """RFC 7162 3.1: a CONDSTORE-enabling command on a selected mailbox sends HIGHESTMODSEQ, once."""
        session = Session(self).login()
        session.append(b"Subject: x\r\n\r\nbody\r\n")
        out, _ = session.command(b"f FETCH 1 (MODSEQ)")
        self.assertIn(b"* OK [HIGHESTMODSEQ ", out)
        self.assertLess(out.index(b"HIGHESTMODSEQ"), out.index(b"FETCH (MODSEQ"))
        out, _ = session.command(b"g FETCH 1 (MODSEQ)")
        self.assertNotIn(b"HIGHESTMODSEQ", out)


class BracketNameTests(unittest.TestCase):
    def test_a_bracket_in_a_mailbox_name_is_an_atom_character(self):
        """RFC 3501 9: C{[} is an ATOM-CHAR; only FETCH's section syntax is bracketed, so no C{BAD Missing ']'}."""
        session = Session(self).login(select=False)
        self.assertEqual(session.command(b"s SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}")[1],
                         b"s NO [NONEXISTENT] No such mailbox")
        self.assertEqual(session.command(b"l LIST \"\" !#$&'+,-.0123456789:;<=>?@^_`|[}%*")[1], b"l OK LIST completed")
        self.assertEqual(session.command(b"c CREATE a[b]")[1], b"c OK Create completed")
        self.assertEqual(session.command(b"l LIST \"\" a[*"), (b'* LIST (\\HasNoChildren) "." "a[b]"',
                                                               b"l OK LIST completed"))
        self.assertEqual(session.command(b"t STATUS a[b] (MESSAGES)")[0], b'* STATUS "a[b]" (MESSAGES 0)')
        self.assertIn(b"s OK [READ-WRITE]", session.command(b"s SELECT a[b]")[1])
        self.assertEqual(session.command(b"d DELETE a[b]")[1], b"d OK Delete completed")
        self.assertEqual(session.command(b"l LIST \"\" a*")[0], b"")


def _literal(out, item):
    """The bytes of the literal following C{item} in a FETCH answer."""
    start = out.index(item + b" {") + len(item) + 2
    size_end = out.index(b"}\r\n", start)
    size = int(out[start:size_end])
    return out[size_end + 3:size_end + 3 + size]


INNER = b"From: sub@domain.org\r\nSubject: submsg\r\n\r\nHello world\r\n"
WRAPPED = b"From: user@domain.org\r\nMime-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"


class WholeBodyMessageTests(unittest.TestCase):
    def assertSections(self, raw, expected):
        """FETCH of each C{BODY.PEEK[section]} named in C{expected} (section: bytes) answers those bytes."""
        session = Session(self).login()
        session.append(raw)
        out, tagged = session.command(b"f FETCH 1 (%s)" % b" ".join(b"BODY.PEEK[%s]" % s for s in expected))
        self.assertIn(b"OK", tagged)
        self.assertEqual({s: _literal(out, b"BODY[%s]" % s) for s in expected}, expected)

    def test_part_one_of_a_message_rfc822_body_is_the_inner_message(self):
        """RFC 3501 6.4.5: the body of a message/rfc822 message is part 1, and its HEADER and TEXT are the inner's."""
        self.assertSections(WRAPPED + INNER, {
            b"1": INNER, b"1.HEADER": b"From: sub@domain.org\r\nSubject: submsg\r\n\r\n",
            b"1.TEXT": b"Hello world\r\n", b"1.1": b"Hello world\r\n"})

    def test_twice_wrapped(self):
        """Each further number enters the next message: 1.1 is the innermost message, 1.1.1 its body."""
        middle = WRAPPED.replace(b"user@", b"user2@") + INNER
        self.assertSections(WRAPPED + middle, {
            b"1": middle, b"1.HEADER": WRAPPED.replace(b"user@", b"user2@"), b"1.1": INNER,
            b"1.1.1": b"Hello world\r\n", b"1.1.HEADER": b"From: sub@domain.org\r\nSubject: submsg\r\n\r\n",
            b"1.1.TEXT": b"Hello world\r\n"})

    def test_bodystructure_holds_the_inner_envelope_and_structure(self):
        session = Session(self).login()
        session.append(WRAPPED + INNER)
        out, _ = session.command(b"f FETCH 1 (BODYSTRUCTURE)")
        self.assertIn(b'BODYSTRUCTURE ("MESSAGE" "RFC822" NIL NIL NIL "7BIT" %d (NIL "submsg" (' % len(INNER), out)
        self.assertIn(b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 13 1 NIL NIL NIL NIL) 4 NIL', out)


ENVELOPES = [
    (b"From: user@domain (Real Name)\r\nTo: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\r\n"
     b"Cc: group:;, group2: (foo) ;\r\n",
     b'(("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain"))'
     b' ((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")(NIL NIL "g2" "d2.org")(NIL NIL NIL NIL)'
     b'(NIL NIL "group2" NIL)(NIL NIL "g3" "d3.org")(NIL NIL NIL NIL))'
     b' ((NIL NIL "group" NIL)(NIL NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL NIL NIL)) NIL'),
    (b"From: <@route:user@domain>\r\nTo: undisclosed-recipients:;\r\n",
     b'((NIL "@route" "user" "domain")) ((NIL "@route" "user" "domain")) ((NIL "@route" "user" "domain"))'
     b' ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL NIL'),
    (b"From: <user (comment)@ (comment) domain.org>\r\nTo: \"Last, First\" <a@b.org>, <@x,@y:c@d.org>\r\n",
     b'((NIL NIL "user" "domain.org")) ((NIL NIL "user" "domain.org")) ((NIL NIL "user" "domain.org"))'
     b' (("Last, First" NIL "a" "b.org")(NIL "@x,@y" "c" "d.org")) NIL NIL'),
]


class EnvelopeAddressTests(unittest.TestCase):
    def test_groups_routes_and_comments(self):
        """RFC 3501 7.4.2: group start and end markers, source routes; a comment inside an address is no name."""
        session = Session(self).login()
        for header, _ in ENVELOPES:
            session.append(b"Date: Thu, 15 Feb 2007 01:02:03 +0200\r\n" + header + b"\r\nbody\r\n")
        out, _ = session.command(b"f FETCH 1:* ENVELOPE")
        for number, (_, addresses) in enumerate(ENVELOPES, 1):
            self.assertIn(b'* %d FETCH (ENVELOPE ("Thu, 15 Feb 2007 01:02:03 +0200" NIL %s NIL NIL))'
                          % (number, addresses), out)

    def test_parser_is_bounded(self):
        """Ten thousand addresses give L{addresses.MAX_ADDRESSES}; unclosed comments and quotes end at the end."""
        from trekmail.imap import addresses
        self.assertEqual(len(addresses.parse("a@b, " * 10000)), addresses.MAX_ADDRESSES)
        self.assertEqual(len(addresses.parse("(x) a@b, " * 10000)), addresses.MAX_ADDRESSES)
        self.assertEqual(addresses.parse("(" * 100000), [])
        [item] = addresses.parse('"' + "\\" * 100001)
        self.assertIsNone(item.domain)


SEARCHED = [
    b"From: user-from@domain.org\r\nTo: user-to@domain.org\r\n",
    b"From: RealFrom <user-from@domain.org>\r\n",
    b"From: <user-from (comment)@ (comment) domain.org>\r\n",
    b"From: user-from@domain.org (RealFrom)\r\n",
    b"From: user-from1@domain.org, user-from2@domain.org\r\n",
    b"From: x@y.org\r\nTo: groupname: groupuser1@domain.org, groupuser2@domain.org;,\r\n  groupname2: groupuser3@d.org;\r\n",
]


class SearchAddressTests(unittest.TestCase):
    def test_address_keys_match_addresses_not_header_text(self):
        """RFC 3501 6.4.4: FROM/TO match the address (comments left out) and its name; group names count."""
        session = Session(self).login()
        for header in SEARCHED:
            session.append(header + b"\r\nbody\r\n")
        for key, expected in ((b"FROM user-from@domain.org", b"1 2 3 4"), (b"FROM realfrom", b"2 4"),
                              (b"FROM ealfro", b"2 4"), (b"FROM comment", b""), (b"FROM user-from2", b"5"),
                              (b"TO groupname", b"6"), (b"TO groupname2", b"6"), (b"TO groupuser3", b"6"),
                              (b"TO user-to", b"1"), (b"TO groupuser4", b"")):
            out, _ = session.command(b"s SEARCH " + key)
            self.assertEqual(out, (b"* SEARCH " + expected).rstrip(), key)


class SubscriptionTests(unittest.TestCase):
    def test_create_and_delete_leave_subscriptions_alone(self):
        """RFC 3501 6.3.3 and 6.3.4: CREATE does not subscribe, DELETE does not unsubscribe (6.3.6)."""
        session = Session(self).login(select=False)
        session.command(b"c CREATE box")
        self.assertEqual(session.command(b"l LSUB \"\" box*")[0], b"")
        session.command(b"s SUBSCRIBE box")
        session.command(b"d DELETE box")
        self.assertEqual(session.command(b"l LSUB \"\" box*")[0], b'* LSUB () "." "box"')
        self.assertEqual(session.command(b"l LIST \"\" box*")[0], b"")
        session.command(b"c CREATE box")
        self.assertEqual(session.command(b"l LSUB \"\" box*")[0], b'* LSUB (\\HasNoChildren) "." "box"')
        self.assertEqual(session.command(b"u UNSUBSCRIBE box")[1], b"u OK Unsubscribe completed")
        self.assertEqual(session.command(b"l LSUB \"\" box*")[0], b"")

    def test_lsub_shows_an_unsubscribed_parent_as_noselect(self):
        """RFC 3501 6.3.9: with C{%}, an unsubscribed parent of a subscribed name is listed as C{\\Noselect}."""
        session = Session(self).login(select=False)
        for name in (b"m.a", b"m.b.c", b"m.d.e"):
            session.command(b"c CREATE " + name)
        session.command(b"s SUBSCRIBE m.a")
        session.command(b"s SUBSCRIBE m.b.c")
        self.assertEqual(session.command(b"l LSUB \"\" m.%")[0],
                         b'* LSUB (\\HasNoChildren) "." "m.a"\r\n* LSUB (\\Noselect) "." "m.b"')
        self.assertEqual(session.command(b"l LSUB \"\" m.*")[0],
                         b'* LSUB (\\HasNoChildren) "." "m.a"\r\n* LSUB (\\HasNoChildren) "." "m.b.c"')

    def test_subscriptions_follow_a_rename(self):
        session = Session(self).login(select=False)
        session.command(b"c CREATE p.q")
        session.command(b"s SUBSCRIBE p.q")
        session.command(b"r RENAME p w")
        self.assertEqual(session.command(b"l LSUB \"\" *.q")[0], b'* LSUB (\\HasNoChildren) "." "w.q"')

    def test_an_index_with_a_subscribed_column_migrates(self):
        """An index made before the list keeps what its folders' C{subscribed} column said."""
        from trekmail.imap import index
        from trekmail.realm import database
        session = Session(self)
        root = session.root()
        os.makedirs(root)
        db = database.connect(os.path.join(root, index.INDEX_NAME))
        database.upgrade(db, (index.INDEX,))
        db.execute("INSERT INTO folders VALUES ('INBOX', 1, 1, 1, 1), ('Old', 2, 1, 1, 1), ('Hidden', 3, 1, 1, 0)")
        db.close()
        session.login(select=False)
        self.assertEqual(session.command(b"l LSUB \"\" *")[0].count(b"* LSUB"), 7)
        self.assertIn(b'"Old"', session.command(b"l LSUB \"\" *")[0])
        self.assertNotIn(b'"Hidden"', session.command(b"l LSUB \"\" *")[0])
        self.assertIn(b'"Hidden"', session.command(b"l LIST \"\" *")[0])


class _Reversed:
    """A stand-in for the fsync threads that writes a batch's copies last first, as threads may."""

    def map(self, function, items):
        return list(reversed([function(item) for item in reversed(items)]))


class ArrivalOrderTests(unittest.TestCase):
    def test_uids_follow_arrival_within_one_second(self):
        """Copies delivered in one batch, in the same second, get UIDs in the batch's order, however written."""
        from trekmail.queue.maildir import deliver_batch
        session = Session(self)
        items = [("alice@example.com", "", b"Subject: %d\r\n\r\nbody\r\n" % n) for n in range(5)]
        self.assertEqual(deliver_batch(session.data_dir, "mail.test", items, session.clock.seconds, _Reversed()),
                         [None] * 5)
        session.login()
        out, _ = session.command(b"f FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertEqual(re.findall(rb"Subject: (\d)", out), [b"0", b"1", b"2", b"3", b"4"])
