"""
The DNS side of DKIM key rotation (L{trekmail.realm.dkimselectors}):
which pending keys DNS shows, and the schedule that moves selectors on.

The lookups go through the configured twisted.names resolver, which
never blocks the reactor; the state changes run on the database thread.
A selector's TXT record is looked up under the customer's name, so in
CNAME mode the answer comes through the customer's CNAME and shows that
both links are in place.
"""

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from trekmail.realm import dkimselectors
from trekmail.relay import dnsverify

log = Logger()


@defer.inlineCallbacks
def shown(resolver, domain_name, selectors):
    """The names of the pending C{selectors} of C{domain_name} whose TXT record in DNS carries our key."""
    waiting = [s for s in selectors if s.state == dkimselectors.PENDING]
    answers = yield defer.gatherResults([
        dnsverify.lookup_txt(resolver, dkimselectors.record_name(domain_name, s.selector)) for s in waiting])
    return {s.selector for s, answer in zip(waiting, answers) if dnsverify.shows_key(answer, s.public_key)}


@defer.inlineCallbacks
def advance_domain(database, resolver, data_dir, name, now, overlap):
    """Look the pending keys of domain C{name} up, then move its selectors on; the changed ones."""
    selectors = yield database.run(dkimselectors.live_named, name)
    names = yield shown(resolver, name, selectors)
    changed = yield database.run(dkimselectors.step, data_dir, name, names, now, overlap)
    for selector in changed:
        log.info("DKIM selector {selector} of {domain} is now {state}",
                 selector=selector.selector, domain=name, state=selector.state)
    return changed


class RotationService(service.Service):
    """
    Every C{[dkim] check_interval} seconds, and at start-up: each domain
    with a pending key or a retiring one whose overlap is over advances.

    @param database: a L{trekmail.realm.database.ThreadedDatabase}.
    @param clock: an C{IReactorTime} (a C{task.Clock} in tests).
    @param settings: the L{trekmail.realm.dkimselectors.DkimSettings}.
    """

    def __init__(self, *, database, resolver, clock, data_dir, settings, interval):
        self._database = database
        self._resolver = resolver
        self._clock = clock
        self._data_dir = data_dir
        self._settings = settings
        self._loop = task.LoopingCall(self.check)
        self._loop.clock = clock
        self._interval = interval

    def startService(self):
        super().startService()
        self._loop.start(self._interval, now=True)

    def stopService(self):
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    @defer.inlineCallbacks
    def check(self):
        """One round; a failure is logged and the next round tries again (the loop must not stop)."""
        now = self._clock.seconds()
        overlap = self._settings.overlap
        try:
            due = yield self._database.run(dkimselectors.due, now, overlap)
        except Exception:
            log.failure("DKIM rotation: cannot read the selectors")
            return
        for name in due:
            try:
                yield advance_domain(self._database, self._resolver, self._data_dir, name, now, overlap)
            except Exception:
                log.failure("DKIM rotation of {domain} failed", domain=name)
