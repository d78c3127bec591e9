"""
The IMAP commands that work on mailboxes and messages (RFC 3501 6.3-6.4,
UIDPLUS, MOVE, UNSELECT, CONDSTORE), as a mixin of
L{trekmail.imap.server.IMAPServer}.  Each returns the whole response
(bytes, or a Deferred of bytes) so that it is written once.
"""

import datetime
import re

from twisted.internet import defer

from trekmail.imap import fetch, flagnames, index, message, search, subscriptions
from trekmail.imap.listpattern import MailboxPattern
from trekmail.imap.message import nstring
from trekmail.imap.parser import (Atom, ProtocolError, mailbox_name, name_fits, number, sequence_members, uid_set,
                                  valid_new_name)
from trekmail.imap.responses import tagged

READ_CHUNK = 128
"""Messages read from disk at a time for FETCH and SEARCH, so a command's memory does not grow with the mailbox."""
STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ")


def _set_text(uids):
    """Compact UID set: C{1:3,7}."""
    out = []
    start = prev = None
    for uid in uids:
        if prev is not None and uid == prev + 1:
            prev = uid
            continue
        if start is not None:
            out.append("%d" % start if start == prev else "%d:%d" % (start, prev))
        start = prev = uid
    if start is not None:
        out.append("%d" % start if start == prev else "%d:%d" % (start, prev))
    return ",".join(out)


def _flags_arg(value):
    items = value if isinstance(value, list) else [value]
    flags = set()
    for item in items:
        if not isinstance(item, Atom) or not flagnames.well_formed(item):
            raise ProtocolError("Invalid flag")
        flag = flagnames.canonical(str(item))
        if flag is None:
            raise ProtocolError("Invalid system flag %s" % (item[:20],))
        flags.add(flag)
    return flags


PARSE_INLINE = 256 * 1024
"""Largest APPENDed message whose MIME tree is worked out on the reactor thread."""

_DATE_TIME = re.compile(r" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")
_MONTHS = {name: number for number, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)}


def _append_date(value):
    """RFC 3501 date-time; matched by hand because C{strptime} cost a tenth of an APPEND's parsing."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    match = _DATE_TIME.fullmatch(text)
    month = match and _MONTHS.get(match.group(2).upper())
    if not month:
        raise ProtocolError("Invalid date-time")
    day, _, year, hour, minute, second, sign, zone_hours, zone_minutes = match.groups()
    offset = datetime.timedelta(hours=int(zone_hours), minutes=int(zone_minutes))
    try:
        zone = datetime.timezone(-offset if sign == "-" else offset)
        return datetime.datetime(int(year), month, int(day), int(hour), int(minute), int(second),
                                 tzinfo=zone).timestamp()
    except ValueError:
        raise ProtocolError("Invalid date-time") from None


class MailboxCommands:
    # -- selection ----------------------------------------------------
    def do_SELECT(self, tag, reader, uid):
        return self._select(tag, reader, readonly=False)

    def do_EXAMINE(self, tag, reader, uid):
        return self._select(tag, reader, readonly=True)

    def _select(self, tag, reader, readonly):
        name = mailbox_name(reader.astring())
        params = reader.rest()
        condstore = False
        if params:
            if not (len(params) == 1 and isinstance(params[0], list)
                    and [str(p).upper() for p in params[0]] == ["CONDSTORE"]):
                raise ProtocolError("Invalid SELECT parameters")
            condstore = True
        out = []
        if self.view is not None:
            self.view.close()
            self.view = None
            self.state = "auth"
            out.append(b"* OK [CLOSED] Previous mailbox closed\r\n")
        return self._with_folder(name, lambda folder: self._open(tag, folder, readonly, condstore, out))

    def _open(self, tag, folder, readonly, condstore, out):
        if folder is None:
            return b"".join(out) + tagged(tag, "NO", "No such mailbox", "NONEXISTENT")
        if self.state != "auth":
            return None
        if condstore:
            self.enabled = True
        view = folder.open_view(self, readonly)
        view.condstore = self.enabled
        self.view = view
        self.state = "selected"
        out.append(view.flags_lines())
        out.append(b"* %d EXISTS\r\n* %d RECENT\r\n" % (len(view.uids), len(view.recent)))
        unseen = folder.first_unseen(view)
        if unseen is not None:
            out.append(b"* OK [UNSEEN %d] First unseen\r\n" % unseen)
        out.append(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % folder.uidvalidity)
        out.append(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % folder.uidnext)
        out.append(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % folder.highestmodseq)
        out.append(tagged(tag, "OK", "Select completed", "READ-ONLY" if readonly else "READ-WRITE"))
        return b"".join(out)

    def _with_folder(self, name, then):
        """
        C{then(folder)} (C{None} if there is no such folder) once the folder
        is loaded and polled: at once when it is loaded and not due a poll,
        as most are under load, else through a Deferred.  Each Deferred
        costs the reactor about as much as a small command's own work.
        """
        folder = self.account.loaded(name)
        if folder is not None and not folder.poll_due():
            return then(folder)
        return self._load_and_poll(name).addCallback(then)

    @defer.inlineCallbacks
    def _load_and_poll(self, name):
        folder = yield self.account.folder(name)
        if folder is not None:
            yield folder.poll()
        return folder

    def _close_view(self):
        self.view.close()
        self.view = None
        self.state = "auth"

    @defer.inlineCallbacks
    def do_CLOSE(self, tag, reader, uid):
        self._no_args(reader)
        view = self.view
        if not view.readonly:
            deleted = [u for u in view.uids if "\\Deleted" in view.flags_of(u)]
            yield view.folder.expunge(view, deleted)
        if self.view is view:
            self._close_view()
        return tagged(tag, "OK", "Close completed")

    def do_UNSELECT(self, tag, reader, uid):
        self._no_args(reader)
        self._close_view()
        return tagged(tag, "OK", "Unselect completed")

    def do_CHECK(self, tag, reader, uid):
        self._no_args(reader)
        if not self.view.folder.poll_due():
            return self.updates() + tagged(tag, "OK", "Check completed")
        return self.view.folder.poll().addCallback(
            lambda _: self.updates() + tagged(tag, "OK", "Check completed"))

    # -- mailboxes ----------------------------------------------------
    @defer.inlineCallbacks
    def do_CREATE(self, tag, reader, uid):
        name = mailbox_name(reader.astring()).rstrip(".")
        self._no_args(reader)
        if name == "INBOX" or not valid_new_name(name):
            return tagged(tag, "NO", "Invalid mailbox name", "CANNOT")
        existing = (yield self.account.folder_list()).names
        if name in existing:
            return tagged(tag, "NO", "Mailbox exists", "ALREADYEXISTS")
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            yield self.account.change_folders(index.create_folder, self.account.root, ".".join(parts[:depth]),
                                              self.account.store.seconds(), True)
        return tagged(tag, "OK", "Create completed")

    @defer.inlineCallbacks
    def do_DELETE(self, tag, reader, uid):
        name = mailbox_name(reader.astring())
        self._no_args(reader)
        existing = (yield self.account.folder_list()).names
        if name == "INBOX" or name not in existing:
            return tagged(tag, "NO", "Cannot delete this mailbox", "NONEXISTENT")
        if any(other.startswith(name + ".") for other in existing):
            return tagged(tag, "NO", "Mailbox has children", "INUSE")
        if self.view is not None and self.view.folder.name == name:
            self._close_view()
        self.account.forget(name)
        yield self.account.change_folders(index.delete_folder, self.account.root, name)
        return tagged(tag, "OK", "Delete completed")

    @defer.inlineCallbacks
    def do_RENAME(self, tag, reader, uid):
        old = mailbox_name(reader.astring())
        new = mailbox_name(reader.astring()).rstrip(".")
        self._no_args(reader)
        existing = (yield self.account.folder_list()).names
        if old not in existing:
            return tagged(tag, "NO", "No such mailbox", "NONEXISTENT")
        if new in existing:
            return tagged(tag, "NO", "Target exists", "ALREADYEXISTS")
        if new == "INBOX" or not valid_new_name(new) or new.startswith(old + "."):
            return tagged(tag, "NO", "Invalid mailbox name", "CANNOT")
        children = [new + other[len(old):] for other in existing if other.startswith(old + ".")]
        if any(child in existing for child in children):
            return tagged(tag, "NO", "A child's new name exists", "ALREADYEXISTS")
        if not all(name_fits(child) for child in children):
            return tagged(tag, "NO", "A child's new name would be too long", "CANNOT")
        if self.view is not None and (self.view.folder.name == old or self.view.folder.name.startswith(old + ".")):
            self._close_view()
        self.account.forget(old)
        yield self.account.change_folders(index.rename_folder, self.account.root, old, new,
                                          self.account.store.seconds())
        return tagged(tag, "OK", "Rename completed")

    @defer.inlineCallbacks
    def do_SUBSCRIBE(self, tag, reader, uid, on=True):
        name = mailbox_name(reader.astring())
        self._no_args(reader)
        # A server may refuse to subscribe a name no folder has (RFC 3501 6.3.6); a stale one may still go.
        if on and name not in (yield self.account.folder_list()).names:
            return tagged(tag, "NO", "No such mailbox", "NONEXISTENT")
        yield self.account.change_folders(subscriptions.subscribe, name, on)
        return tagged(tag, "OK", "%s completed" % ("Subscribe" if on else "Unsubscribe"))

    def do_UNSUBSCRIBE(self, tag, reader, uid):
        return self.do_SUBSCRIBE(tag, reader, uid, on=False)

    def do_LIST(self, tag, reader, uid):
        return self._list(tag, reader, "LIST", subscribed_only=False)

    def do_LSUB(self, tag, reader, uid):
        return self._list(tag, reader, "LSUB", subscribed_only=True)

    def _list(self, tag, reader, verb, subscribed_only):
        reference = reader.astring().decode("utf-8", "replace")
        pattern = reader.astring().decode("utf-8", "replace")
        self._no_args(reader)
        if not pattern:
            return b'* %s (\\Noselect) "." ""\r\n' % verb.encode() + tagged(tag, "OK", "%s completed" % verb)
        folders = self.account.known_folder_list()
        if folders is None:
            return self.account.folder_list().addCallback(
                lambda folders: self._list_lines(tag, verb, subscribed_only, reference, pattern, folders))
        return self._list_lines(tag, verb, subscribed_only, reference, pattern, folders)

    def _list_lines(self, tag, verb, subscribed_only, reference, pattern, folders):
        names = set(folders.names)
        matcher = MailboxPattern(reference, pattern)
        if subscribed_only:
            chosen = subscriptions.lsub(folders.subscribed, matcher.match)
        else:
            chosen = [(name, False) for name in folders.names if matcher.match(name)]
        out = []
        for name, no_select in chosen:
            if no_select:
                attributes = ["\\Noselect"]
            elif name not in names:
                attributes = []
            else:
                attributes = ["\\HasChildren" if any(n.startswith(name + ".") for n in names) else "\\HasNoChildren"]
                if name in index.SPECIAL_USE:
                    attributes.append(index.SPECIAL_USE[name])
            out.append(b'* %s (%s) "." %s\r\n' % (verb.encode(), " ".join(attributes).encode(), nstring(name)))
        out.append(tagged(tag, "OK", "%s completed" % verb))
        return b"".join(out)

    def do_STATUS(self, tag, reader, uid):
        name = mailbox_name(reader.astring())
        items = reader.token()
        self._no_args(reader)
        if not isinstance(items, list) or not items or any(str(i).upper() not in STATUS_ITEMS for i in items):
            raise ProtocolError("Invalid STATUS items")
        return self._with_folder(name, lambda folder: self._status(tag, name, items, folder))

    def _status(self, tag, name, items, folder):
        if folder is None:
            return tagged(tag, "NO", "No such mailbox", "NONEXISTENT")
        values = {"MESSAGES": len(folder.uids), "RECENT": len(folder.recent), "UIDNEXT": folder.uidnext,
                  "UIDVALIDITY": folder.uidvalidity, "UNSEEN": folder.unseen(),
                  "HIGHESTMODSEQ": folder.highestmodseq}
        body = " ".join("%s %d" % (str(i).upper(), values[str(i).upper()]) for i in items)
        return b"* STATUS %s (%s)\r\n" % (nstring(name), body.encode()) + tagged(tag, "OK", "Status completed")

    @defer.inlineCallbacks
    def do_APPEND(self, tag, reader, uid):
        name = mailbox_name(reader.astring())
        args = reader.rest()
        if not args or not isinstance(args[-1], bytes):
            raise ProtocolError("Missing message literal")
        data = args.pop()
        flags = _flags_arg(args.pop(0)) if args and isinstance(args[0], list) else set()
        when = _append_date(args.pop(0)) if args else self.factory.clock.seconds()
        if args:
            raise ProtocolError("Invalid APPEND arguments")
        if not data:
            return tagged(tag, "NO", "Empty message")
        folder = yield self.account.folder(name)
        if folder is None:
            return tagged(tag, "NO", "No such mailbox", "TRYCREATE")
        filename = yield self.account.run_files(index.write_message, self.account.root, name, data, when,
                                                self.account.store.seconds(), self.account.spares.take())
        # A small message is parsed here, not on the file thread: Python work there holds the GIL, and the reactor,
        # giving it up in every sqlite call and send, would wait for it.  A large one would hold every session.
        if len(data) <= PARSE_INLINE:
            structures = message.structures(data)
        else:
            structures = yield self.account.run_files(message.structures, data)
        self.account.store.cache.put((self.account.root, filename), data)
        uids = yield folder.add([(filename, len(data), int(when), " ".join(sorted(flags)))], self.view,
                                [structures])
        return self.updates() + tagged(tag, "OK", "Append completed",
                                      "APPENDUID %d %d" % (folder.uidvalidity, uids[0]))

    # -- messages -----------------------------------------------------
    def _targets(self, reader, uid):
        text = str(reader.atom())
        if uid:
            return uid_set(text, self.view.uids)
        return sequence_members(text, self.view.uids)

    def do_FETCH(self, tag, reader, uid):
        """
        Answered at once, without a Deferred, when the structures and
        messages it needs are in memory (most FETCHes under load): the
        Deferreds of the general path cost as much as the rendering.
        """
        view = self.view
        uids = self._targets(reader, uid)
        args = reader.rest()
        request = fetch.parse(args)
        since = fetch.changedsince(args)
        if request.wants_modseq or since is not None:
            self.enable_condstore()
        if since is not None:
            uids = [u for u in uids if view.folder.get(u) and view.folder.get(u).modseq > since]
            if "MODSEQ" not in request.items:
                request.items.append("MODSEQ")
        folder = view.folder
        if request.sets_seen and not view.readonly:
            unseen = [u for u in uids if u in folder.msgs and "\\Seen" not in folder.msgs[u].flags]
            if unseen:
                folder.store(view, unseen, "+", {"\\Seen"})
                if "FLAGS" not in request.items:
                    request.items.append("FLAGS")
        render = fetch.renderer(request, uid)
        structures = folder.known_structures(uids) if request.wants_structure else {}
        raws = {}
        if request.wants_raw:
            raws = folder.cached(uids) if len(uids) <= READ_CHUNK else None
        if structures is None or raws is None:
            return self._fetch_reading(tag, view, request, render, uids, uid)
        out = self._fetch_lines(view, request, render, uids, structures, raws)
        out.append(self.updates(allow_expunge=uid))
        out.append(tagged(tag, "OK", "Fetch completed"))
        return b"".join(out)

    @defer.inlineCallbacks
    def _fetch_reading(self, tag, view, request, render, uids, uid):
        """FETCH when structures must be computed or messages read from disk first."""
        folder = view.folder
        structures = (yield folder.structure(uids)) if request.wants_structure else {}
        if self.view is not view:
            return None
        out = []
        step = READ_CHUNK if request.wants_raw else max(len(uids), 1)
        for start in range(0, len(uids), step):
            chunk = uids[start:start + step]
            raws = (yield folder.read(chunk, keep=len(uids) <= READ_CHUNK)) if request.wants_raw else {}
            if self.view is not view:
                return None
            out.extend(self._fetch_lines(view, request, render, chunk, structures, raws))
            if request.wants_raw and start + step < len(uids):
                self.transport.write(b"".join(out))
                out = []
        out.append(self.updates(allow_expunge=uid))
        out.append(tagged(tag, "OK", "Fetch completed"))
        return b"".join(out)

    def _fetch_lines(self, view, request, render, uids, structures, raws):
        out = []
        if not uids:
            return out
        if view.keywords != len(view.folder.keywords):
            # Another session may have stored a new keyword while we
            # waited: announce it before any FETCH shows it (RFC 3501 7.2.6).
            out.append(view.flags_lines())
        wants_raw, wants_structure = request.wants_raw, request.wants_structure
        for seq, u, msg, flags in view.numbered(uids):
            raw = raws.get(u) if wants_raw else None
            structure = structures.get(u) if wants_structure else None
            if (wants_raw and raw is None) or (wants_structure and structure is None):
                continue
            out.append(render(seq, u, msg, flags, structure, raw))
        return out

    def do_STORE(self, tag, reader, uid):
        view = self.view
        uids = self._targets(reader, uid)
        args = reader.rest()
        unchangedsince = None
        if args and isinstance(args[0], list):
            modifier = args.pop(0)
            if len(modifier) != 2 or str(modifier[0]).upper() != "UNCHANGEDSINCE":
                raise ProtocolError("Invalid STORE modifier")
            unchangedsince = number(modifier[1], "UNCHANGEDSINCE")
            self.enable_condstore()
        if len(args) < 2 or not isinstance(args[0], Atom):
            raise ProtocolError("Invalid STORE arguments")
        item = args[0].upper()
        mode = item[0] if item[0] in "+-" else ""
        if item.lstrip("+-") not in ("FLAGS", "FLAGS.SILENT"):
            raise ProtocolError("Invalid STORE item")
        flags = _flags_arg(args[1] if len(args) == 2 else args[1:])
        if view.readonly:
            return tagged(tag, "NO", "Mailbox is read-only", "READ-ONLY")
        changed, failed = view.folder.store(view, uids, mode, flags, unchangedsince)
        out = []
        if view.keywords != len(view.folder.keywords):
            out.append(view.flags_lines())
        if not item.endswith(".SILENT") or self.enabled:
            for u in changed:
                seq = view.seq_of(u)
                if seq is not None:
                    out.append(view.flag_line(seq, u, with_uid=uid))
        out.append(self.updates(allow_expunge=uid))
        if failed:
            out.append(tagged(tag, "OK", "Conditional store failed", "MODIFIED %s" % _set_text(
                failed if uid else [view.seq_of(u) for u in failed])))
        else:
            out.append(tagged(tag, "OK", "Store completed"))
        return b"".join(out)

    @defer.inlineCallbacks
    def do_SEARCH(self, tag, reader, uid):
        view = self.view
        try:
            query = search.parse(reader.rest(), view)
        except search.BadCharset:
            return tagged(tag, "NO", "Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")
        folder = view.folder
        hits = []
        top = 0
        uids = view.uids
        step = READ_CHUNK if query.needs_raw else max(len(uids), 1)
        for start in range(0, len(uids), step):
            chunk = uids[start:start + step]
            raws = (yield folder.read(chunk, keep=False)) if query.needs_raw else {}
            if self.view is not view:
                return None
            for seq, u, msg, flags in view.numbered(chunk):
                raw = raws.get(u) if query.needs_raw else None
                if query.needs_raw and raw is None:
                    continue
                if query.matches(search.Item(seq, u, msg, flags, raw)):
                    hits.append(u if uid else seq)
                    if msg.modseq > top:
                        top = msg.modseq
        line = b"* SEARCH " + " ".join(map(str, hits)).encode() if hits else b"* SEARCH"
        if query.uses_modseq and hits:
            line += b" (MODSEQ %d)" % top
        return line + b"\r\n" + self.updates(allow_expunge=uid) + tagged(tag, "OK", "Search completed")

    def do_COPY(self, tag, reader, uid):
        return self._copy(tag, reader, uid, move=False)

    def do_MOVE(self, tag, reader, uid):
        return self._copy(tag, reader, uid, move=True)

    @defer.inlineCallbacks
    def _copy(self, tag, reader, uid, move):
        view = self.view
        uids = self._targets(reader, uid)
        name = mailbox_name(reader.astring())
        self._no_args(reader)
        if move and view.readonly:
            return tagged(tag, "NO", "Mailbox is read-only", "READ-ONLY")
        target = yield self.account.folder(name)
        if target is None:
            return tagged(tag, "NO", "No such mailbox", "TRYCREATE")
        source = view.folder
        msgs = [(u, source.get(u)) for u in uids if source.get(u) is not None]
        names = yield self.account.run_files(index.link_messages, self.account.root, source.name, name,
                                       [m.filename for _, m in msgs], self.account.store.seconds())
        pairs = [(u, m, f) for (u, m), f in zip(msgs, names) if f is not None]
        new = yield target.add([(f, m.size, m.date, " ".join(sorted(m.flags))) for _, m, f in pairs],
                               view if target is source else None)
        code = None
        if pairs:
            code = "COPYUID %d %s %s" % (target.uidvalidity, _set_text([u for u, _, _ in pairs]),
                                         ",".join(str(n) for n in new))
        out = []
        if move:
            if code:
                out.append(b"* OK [%s] Moved\r\n" % code.encode())
                code = None
            moved = [u for u, _, _ in pairs]
            out.append(self._expunge_lines(moved))
            yield source.expunge(view, moved)
        if self.view is not view and self.view is not None:
            return None
        out.append(self.updates())
        out.append(tagged(tag, "OK", "Move completed" if move else "Copy completed", code))
        return b"".join(out)

    def _expunge_lines(self, uids):
        return b"".join(self.view.forget(uids))

    @defer.inlineCallbacks
    def do_EXPUNGE(self, tag, reader, uid):
        view = self.view
        limit = set(uid_set(str(reader.atom()), view.uids)) if uid else None
        self._no_args(reader)
        if view.readonly:
            return tagged(tag, "NO", "Mailbox is read-only", "READ-ONLY")
        deleted = [u for u in view.uids if u in view.folder.msgs and "\\Deleted" in view.folder.msgs[u].flags
                   and (limit is None or u in limit)]
        out = self.updates()
        out += self._expunge_lines(deleted)
        yield view.folder.expunge(view, deleted)
        return out + tagged(tag, "OK", "Expunge completed")
