"""
Mailboxes as the IMAP sessions share them: an L{Account} per mailbox in
use, and the L{MailStore} that opens them and owns the threads.  The
state of an open folder is a L{trekmail.imap.folder.Folder}, a session's
numbering of it a L{trekmail.imap.view.View}, recently read messages in
a L{trekmail.imap.cache.MessageCache}.

Index work and file moves run in submission order, so the reactor-side
state and the index never disagree about UIDs: small pieces at once on
the reactor thread, the rest on one worker thread (L{Account.run});
writing new files and reading messages run on a few more threads.  Each
trip to a thread costs the reactor more than most commands' own work
(py-spy under imaptest; C{bench/handoff.py}), so what can be answered
from memory is: flag changes reach the index in batches after the reply.
"""

from twisted.internet import defer, inotify
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from trekmail.durable import remove_if_there
from trekmail.imap import index, spares
from trekmail.imap.cache import MessageCache
from trekmail.imap.folder import Folder
from trekmail.mailstore import maildir_path
from trekmail.workerthreads import WorkerThreads

INLINE_ROWS = 200
"""Index calls touching at most this many rows or files may run on the reactor thread (L{Account.run})."""
CHECKPOINT_EVERY = 500
"""Index calls on the reactor thread between two WAL checkpoints, which run on the worker."""
FLAGS_DELAY = 0.02
"""Seconds a flag change may wait in memory for others to share its index write."""


def _close(db, spare_files):
    db.close()
    remove_if_there(*spare_files)


def _flag_rows(batch):
    return sum(len(rows) for _, rows, _ in batch)


def _flags_then(db, batch, function, args):
    """On the worker: the waiting flag changes, then C{function}; a failure of the first does not stop the second."""
    try:
        index.update_flags_many(db, batch)
        flags_failure = None
    except Exception:
        flags_failure = Failure()
    return flags_failure, function(db, *args)

class Account:
    """
    One mailbox (address) while any session uses it: its index, and the
    folders loaded so far, kept until the last session leaves so that
    SELECT after SELECT does not reload them.
    """

    def __init__(self, store, address, root, db):
        self.store = store
        self.address = address
        self.root = root
        self.db = db
        self.folders = {}
        self._loading = {}
        self._folder_list = None
        self.users = 0
        self._flags_saving = []
        self._flags_waiting = []
        self._flags_timer = None
        self._on_worker = 0
        self._inline_calls = 0
        self.spares = spares.SpareFiles()

    def run(self, function, *args, rows=None):
        """
        Index work and file moves, in the order asked.  A small piece
        (C{rows}, the rows or files it touches, at most L{INLINE_ROWS})
        runs at once on the reactor thread when none of this account's
        work is on the worker, else after that work on the worker.  Every
        L{CHECKPOINT_EVERY} such pieces, a checkpoint goes to the worker
        first and the piece follows it there.  A sqlite commit
        here is a write to the WAL in the page cache (synchronous=NORMAL,
        and checkpoints, which fsync, run on the worker: see
        L{index.open_index}), a few tens of microseconds; a trip to a
        thread and back costs the reactor about a hundred microseconds
        of CPU in wake-ups, more than the work it carries
        (C{bench/handoff.py}).
        """
        if rows is not None and rows <= INLINE_ROWS and not self._on_worker:
            self._inline_calls += 1
            if self._inline_calls < CHECKPOINT_EVERY:
                return defer.execute(function, *args)
            self._inline_calls = 0
            self.run(index.checkpoint, self.db)
        self._on_worker += 1
        return self.store.run(function, *args).addBoth(self._left_worker)

    def _left_worker(self, result):
        self._on_worker -= 1
        return result

    def run_files(self, function, *args):
        return self.store.run_files(function, *args)

    def run_db(self, function, *args, rows=None):
        """Index work, in order (see L{run}); flag changes still waiting are written first, in the same call."""
        if not self._flags_waiting:
            return self.run(function, self.db, *args, rows=rows)
        batch = self._start_saving()

        def done(outcome):
            if isinstance(outcome, Failure):
                self._saved(batch, None)
                return outcome
            flags_failure, result = outcome
            self._saved(batch, flags_failure)
            return result
        rows = None if rows is None else rows + _flag_rows(batch)
        return self.run(_flags_then, self.db, batch, function, args, rows=rows).addBoth(done)

    def save_flags(self, name, rows, modseq):
        """
        Records a STORE in the index without holding up its answer: the
        folder in memory is the authority while it is open, and flags are
        not mail (the index already commits with synchronous=NORMAL).  A
        change waits L{FLAGS_DELAY} for company: changes from every
        session, and any other index work (an EXPUNGE after a STORE of
        C{\\Deleted}), go in one index call.  What arrives while a write is
        under way on the worker goes into the next one.
        """
        self._flags_waiting.append((name, rows, modseq))
        if self._flags_timer is None and not self._flags_saving:
            self._flags_timer = self.store.call_later(FLAGS_DELAY, self._save_waiting_flags)

    def cancel_flag_timer(self):
        if self._flags_timer is not None:
            if self._flags_timer.active():
                self._flags_timer.cancel()
            self._flags_timer = None

    def _start_saving(self):
        self.cancel_flag_timer()
        batch, self._flags_waiting = self._flags_waiting, []
        self._flags_saving.append(batch)
        return batch

    def _save_waiting_flags(self):
        batch = self._start_saving()
        d = self.run(index.update_flags_many, self.db, batch, rows=_flag_rows(batch))
        d.addCallbacks(lambda _: self._saved(batch, None), lambda f: self._saved(batch, f))

    def _saved(self, batch, failure):
        if failure is not None:
            self.store.log.failure("flag changes not saved in {root}", failure, root=self.root)
        self._flags_saving = [b for b in self._flags_saving if b is not batch]
        if self._flags_waiting and not self._flags_saving and self._flags_timer is None:
            self._save_waiting_flags()

    def unsaved_flags(self):
        """Flag changes not yet known to be in the index, oldest first (writing them again is harmless)."""
        return [change for batch in self._flags_saving for change in batch] + self._flags_waiting

    def folder(self, name):
        """Deferred firing with the loaded L{Folder}, or C{None} if there is no such folder."""
        if name in self.folders:
            return defer.succeed(self.folders[name])
        waiters = self._loading.get(name)
        if waiters is None:
            waiters = self._loading[name] = []

            def loaded(result):
                for waiter in self._loading.pop(name):
                    if result is not None and name not in self.folders:
                        self.folders[name] = Folder(self, name, *result)
                        self.store.watch(self.folders[name])
                    waiter.callback(self.folders.get(name))

            def failed(failure):
                for waiter in self._loading.pop(name):
                    waiter.errback(failure)
            self.run_db(index.load_folder, self.root, name, self.store.seconds()).addCallbacks(loaded, failed)
        waiting = defer.Deferred()
        waiters.append(waiting)
        return waiting

    def loaded(self, name):
        """The L{Folder} if it is loaded, else C{None} (and L{folder} loads it)."""
        return self.folders.get(name)

    def known_folder_list(self):
        """What L{folder_list} gives, if it is cached; else C{None}."""
        return self._folder_list

    def folder_list(self):
        """Deferred firing with the L{index.Listing}; cached, as only this process changes it."""
        if self._folder_list is not None:
            return defer.succeed(self._folder_list)

        def keep(listing):
            self._folder_list = listing
            return listing
        return self.run_db(index.list_folders).addCallback(keep)

    def change_folders(self, function, *args):
        """Runs a CREATE/DELETE/RENAME/SUBSCRIBE on the index and forgets the cached list."""
        self._folder_list = None
        d = self.run_db(function, *args)

        def done(result):
            self._folder_list = None
            return result
        return d.addBoth(done)

    def forget(self, name):
        """Drops a folder (and its children) deleted or renamed under the sessions' feet."""
        for key in [k for k in self.folders if k == name or k.startswith(name + ".")]:
            self.store.unwatch(self.folders.pop(key))


class MailStore:
    """
    Opens accounts on demand and shares them between sessions; owns the
    worker thread.  C{notifier} (a C{twisted.internet.inotify.INotify})
    lets new deliveries reach IDLE sessions at once; without it they are
    found on NOOP, CHECK and IDLE.
    """

    log = Logger()

    def __init__(self, data_dir, reactor, notifier=None, *, cache_bytes=32 * 1024 * 1024, closed=lambda address: None):
        self.data_dir = data_dir
        self.closed = closed
        """Called with an address once its account is closed and its flags written: another process may open it."""
        self.cache = MessageCache(cache_bytes)
        self._reactor = reactor
        self._pool = WorkerThreads(reactor, 1, "trekmail-mailstore")
        self._files = WorkerThreads(reactor, 4, "trekmail-mailfiles")
        self._stopped = False
        self._accounts = {}
        self._notifier = notifier
        self._watched = {}

    def start(self):
        self._pool.start()
        self._files.start()

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        self._files.stop()
        self._pool.stop()
        for account in self._accounts.values():
            if not isinstance(account, defer.Deferred):
                account.cancel_flag_timer()
                index.update_flags_many(account.db, account.unsaved_flags())
                account.db.close()
                remove_if_there(*account.spares.drain())
        self._accounts.clear()

    def seconds(self):
        return self._reactor.seconds()

    def call_later(self, delay, function, *args):
        return self._reactor.callLater(delay, function, *args)

    def run(self, function, *args):
        """On the one worker that owns the indexes and moves files: runs in submission order."""
        return self._pool.run(function, *args)

    def run_files(self, function, *args):
        """
        Writing (and fsyncing) new files and reading messages need no
        order, so they run on several threads: an fsync must not hold up
        every other session's index work.
        """
        return self._files.run(function, *args)

    @defer.inlineCallbacks
    def open_account(self, address):
        while isinstance(self._accounts.get(address), defer.Deferred):
            yield self._accounts[address]
        account = self._accounts.get(address)
        if account is None:
            pending = defer.Deferred()
            self._accounts[address] = pending
            root = maildir_path(self.data_dir, address)
            try:
                db = yield self.run(index.open_index, root, self.seconds())
            except BaseException:
                del self._accounts[address]
                pending.callback(None)
                raise
            account = Account(self, address, root, db)
            self._accounts[address] = account
            pending.callback(None)
        account.users += 1
        return account

    def release(self, account):
        account.users -= 1
        if account.users == 0 and self._accounts.get(account.address) is account:
            del self._accounts[account.address]
            for folder in list(account.folders.values()):
                self.unwatch(folder)
            d = account.run_db(_close, account.spares.drain())
            d.addCallback(lambda _: self.closed(account.address))
            d.addErrback(lambda f: self.log.failure("closing {root} failed", f, root=account.root))

    def watch(self, folder):
        if self._notifier is None:
            return
        path = FilePath(index.folder_dir(folder.account.root, folder.name)).child("new")

        def changed(_, filepath, mask):
            folder.poll(force=True).addErrback(lambda f: self.log.failure("pick-up failed", f))
        try:
            self._notifier.watch(path, inotify.IN_MOVED_TO | inotify.IN_CREATE, callbacks=[changed])
        except inotify.INotifyError as e:
            self.log.warn("cannot watch {path} ({error}); new mail shows on NOOP and IDLE only",
                          path=path.path, error=e)
            return
        self._watched[folder] = path
        folder.watched = True

    def unwatch(self, folder):
        path = self._watched.pop(folder, None)
        folder.watched = False
        if path is not None:
            try:
                self._notifier.ignore(path)
            except KeyError:
                self.log.info("{path} was no longer watched (moved by RENAME)", path=path.path)
