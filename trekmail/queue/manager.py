"""
The queue: accepts messages durably (L{IMessageQueue}), then tries each
until every recipient is delivered or has failed for good.

Per-recipient state: a message keeps the recipients still pending; those
delivered leave it, those that failed for good are reported to the sender
in one RFC 3464 report per attempt.  Temporary failures wait by the
L{RetryPolicy}; past its maximum age the rest are reported as expired.
The report is itself queued (durably) before the original's state
changes, so a crash in between can duplicate a report but never lose one.
A message from the null sender is never reported on.

Reports other servers send back count as hard bounces only when they
come to a signed return path (L{trekmail.queue.returnpath}) that verifies
for the sender and recipient they name: then the bound recipient is
counted once, and the report goes on to the sender's mailbox.  Anything
else sent to a return path (forged, tampered, expired, not a report) is
logged and dropped: it was accepted, and a null sender has nobody to
tell.  A report to an ordinary mailbox is just mail: delivered, never
counted.

All timing goes through the injected clock: tests drive retries and
expiry with L{twisted.internet.task.Clock}.
"""

import dataclasses

from twisted.internet.defer import fail, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from trekmail import maillog
from trekmail.delivery import Outcome
from trekmail.queue import dsn
from trekmail.queue.delivery import domain_of
from trekmail.queue.interface import Envelope, IMessageQueue, SpoolError
from trekmail.queue.spoolformat import TornEntry, new_queue_id
from trekmail.queue.suppression import is_hard_bounce, is_hard_status

CONTROL_SECONDS = 5

log = Logger()


class _Entry:
    __slots__ = ("queue_id", "envelope", "pending", "attempts", "next_at", "message",
                 "timer", "active", "errors", "replied", "generation", "kept")

    def __init__(self, queue_id, envelope, pending, generation, attempts=0, next_at=0.0, message=None):
        self.queue_id = queue_id
        self.envelope = envelope
        self.pending = list(pending)
        self.attempts = attempts
        self.next_at = next_at
        self.message = message
        self.timer = None
        self.active = False
        self.errors = {}
        self.replied = set()  # whose last error a server said (an smtp; diagnostic), not we
        self.generation = generation
        self.kept = {}


@implementer(IMessageQueue)
class MessageQueue:
    def __init__(self, *, spool, deliverer, suppressions, policy, clock, hostname, concurrency=100,
                 return_paths=None):
        self._spool = spool
        self._deliverer = deliverer
        self._suppressions = suppressions
        self._policy = policy
        self._clock = clock
        self._hostname = hostname
        self._concurrency = concurrency
        self._return_paths = return_paths
        self._entries = {}
        self._ready = []
        self._running = 0
        self._generation = 0
        self._control = LoopingCall(
            lambda: self.check_control().addErrback(lambda f: log.failure("queue control check failed", f))
        )
        self._control.clock = clock
        self.started = False

    # -- accepting

    def enqueue(self, envelope, message, trace=None):
        now = self._clock.seconds()
        if not envelope.received_at:
            envelope = dataclasses.replace(envelope, received_at=now)
        queue_id = new_queue_id(now)
        if trace is not None:
            message = trace(queue_id) + message
        try:
            d = self._spool.store(queue_id, envelope, message)
        except (TypeError, ValueError) as e:
            log.error("spool refused {queue_id}: {error}", queue_id=queue_id, error=e)
            return fail(SpoolError(str(e)))
        d.addCallback(self._accepted, envelope, message)
        return d

    def _accepted(self, queue_id, envelope, message):
        self._generation += 1
        entry = _Entry(queue_id, envelope, envelope.recipients, self._generation, message=message)
        self._entries[queue_id] = entry
        if self.started:
            self._schedule(entry, self._clock.seconds())
        return queue_id

    # -- lifecycle

    @inlineCallbacks
    def start(self):
        """Recover the spool, then start delivering; fires when recovered."""
        recovered = yield self._spool.recover()
        now = self._clock.seconds()
        for queue_id, envelope, state in recovered:
            if queue_id in self._entries:
                continue
            self._generation += 1
            if state:
                entry = _Entry(queue_id, envelope, state.get("pending", envelope.recipients),
                               self._generation, state.get("attempts", 0), state.get("next_at") or now)
                entry.errors = dict(state.get("errors", {}))
                entry.replied = set(state.get("replied", ()))
            else:
                entry = _Entry(queue_id, envelope, envelope.recipients, self._generation)
            self._entries[queue_id] = entry
        log.info("queue recovered {count} messages", count=len(recovered))
        self.started = True
        for entry in list(self._entries.values()):
            self._schedule(entry, max(entry.next_at, now))
        self._control.start(CONTROL_SECONDS, now=False)

    def stop(self):
        self.started = False
        if self._control.running:
            self._control.stop()
        for entry in self._entries.values():
            if entry.timer is not None and entry.timer.active():
                entry.timer.cancel()
            entry.timer = None

    # -- what the CLI and tests look at

    def __len__(self):
        return len(self._entries)

    def entries(self):
        return [
            {"queue_id": e.queue_id, "sender": e.envelope.sender, "pending": list(e.pending),
             "attempts": e.attempts, "next_at": e.next_at, "errors": dict(e.errors)}
            for e in sorted(self._entries.values(), key=lambda e: e.queue_id)
        ]

    def census(self):
        """
        C{(state, received_at)} of each message held, for the metrics:
        C{active} (being tried), C{deferred} (tried before) or C{new}.
        From memory, so a scrape reads no spool directory.
        """
        for e in self._entries.values():
            yield ("active" if e.active else "deferred" if e.attempts else "new"), e.envelope.received_at

    def flush(self):
        """Try every waiting message now."""
        now = self._clock.seconds()
        for entry in list(self._entries.values()):
            if not entry.active:
                self._schedule(entry, now)

    @inlineCallbacks
    def check_control(self):
        """
        Pick up the CLI's requests: a C{flush} file in C{control/}, and
        messages whose file was deleted (C{trekmail queue delete}).
        """
        generation = self._generation
        present, flush = yield self._spool.scan()
        for entry in list(self._entries.values()):
            if entry.generation <= generation and not entry.active and entry.queue_id not in present:
                self._drop(entry)
                log.info("message {queue_id} deleted by the operator", queue_id=entry.queue_id)
        if flush:
            self.flush()

    # -- scheduling

    def _schedule(self, entry, when):
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.next_at = when
        if not self.started:
            return
        delay = max(0.0, when - self._clock.seconds())
        entry.timer = self._clock.callLater(delay, self._due, entry)

    def _due(self, entry):
        entry.timer = None
        if entry.queue_id not in self._entries or entry.active:
            return
        if self._running >= self._concurrency:
            self._ready.append(entry)
            return
        self._start_attempt(entry)

    def _start_attempt(self, entry):
        entry.active = True
        self._running += 1
        d = self._attempt(entry)
        d.addErrback(self._attempt_crashed, entry)
        d.addBoth(self._attempt_done, entry)

    def _attempt_done(self, _, entry):
        entry.active = False
        self._running -= 1
        while self._ready and self._running < self._concurrency:
            waiting = self._ready.pop(0)
            if waiting.queue_id in self._entries and not waiting.active:
                self._start_attempt(waiting)

    def _attempt_crashed(self, failure, entry):
        log.failure("delivery attempt of {queue_id} failed", failure, queue_id=entry.queue_id)
        entry.attempts += 1
        self._reschedule(entry)

    def _drop(self, entry):
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.timer = None
        self._entries.pop(entry.queue_id, None)

    # -- one attempt

    @inlineCallbacks
    def _attempt(self, entry):
        message, entry.message = entry.message, None
        if message is None:
            try:
                _, message = yield self._spool.read(entry.queue_id)
            except TornEntry as e:
                log.error("quarantined torn message {queue_id}: {why}", queue_id=entry.queue_id, why=str(e))
                self._drop(entry)
                return
            except FileNotFoundError:
                self._drop(entry)
                return
        envelope = entry.envelope
        if envelope.origin == "mx" and self._return_paths is not None:
            entry.pending = yield self._take_returned(entry, message)
            if not entry.pending:
                self._drop(entry)
                yield self._spool.remove(entry.queue_id)
                return
        results = yield self._deliverer.attempt(envelope, message, entry.pending, entry.kept, entry.queue_id)
        entry.attempts += 1
        failed = []
        still = []
        for result in results:
            outcome = result.outcome
            entry.replied.discard(outcome.recipient)
            if outcome.delivered:
                entry.errors.pop(outcome.recipient, None)
            elif outcome.permanent:
                entry.errors.pop(outcome.recipient, None)
                failed.append(outcome)
                if result.remote and is_hard_bounce(outcome):
                    yield self._hard_bounce(envelope.sender, outcome.recipient, "%d %s" % (outcome.code, outcome.text))
            else:
                entry.errors[outcome.recipient] = "%d %s" % (outcome.code, outcome.text)
                if outcome.reply:
                    entry.replied.add(outcome.recipient)
                still.append(outcome.recipient)
        now = self._clock.seconds()
        next_at = None
        if still:
            next_at = self._policy.next_attempt(entry.attempts, envelope.received_at, now)
            if next_at is None:
                failed.extend(_expired(r, entry.errors.get(r), r in entry.replied) for r in still)
                still = []
        for result in results:
            _log_delivery(entry, result, result.outcome.recipient in still, now)
        entry.pending = still + [o.recipient for o in failed]
        if failed:
            yield self._report(entry, failed, message)
        entry.pending = still
        if not still:
            self._drop(entry)
            yield self._spool.remove(entry.queue_id)
            return
        yield self._spool.write_state(entry.queue_id, {
            "attempts": entry.attempts, "next_at": next_at, "pending": still, "errors": entry.errors,
            "replied": sorted(entry.replied),
        })
        self._schedule(entry, next_at)

    def _reschedule(self, entry):
        if entry.queue_id not in self._entries:
            return
        now = self._clock.seconds()
        next_at = self._policy.next_attempt(entry.attempts, entry.envelope.received_at, now)
        self._schedule(entry, now + self._policy.intervals[0] if next_at is None else next_at)

    @inlineCallbacks
    def _report(self, entry, failed, message):
        envelope = entry.envelope
        if not envelope.sender or envelope.origin == "report":
            log.info("dropped failure of report {queue_id}", queue_id=entry.queue_id)
            return
        report = dsn.build_report(
            self._hostname, entry.queue_id, envelope, failed, self._clock.seconds(), message
        )
        report_envelope = Envelope(sender="", recipients=(envelope.sender,), origin="report",
                                   extra={"reports_on": entry.queue_id})
        report_id = yield self.enqueue(report_envelope, report)
        maillog.emit(log, maillog.REPORT, queue_id=entry.queue_id, recipient=envelope.sender, kind="failure",
                     report_id=report_id)
        log.info("reported {count} failed recipients of {queue_id} in {report_id}",
                 count=len(failed), queue_id=entry.queue_id, report_id=report_id)

    @inlineCallbacks
    def _hard_bounce(self, sender, recipient, diagnostic):
        """
        Count a hard bounce against the sending domain.  Bookkeeping only:
        if the database cannot record it, the delivery results stand
        (failing the attempt would deliver again to recipients who have
        the message).
        """
        if not sender:
            return
        domain = domain_of(sender)
        try:
            if (yield self._deliverer.hosted(domain)) is None:
                return
            yield self._suppressions.record(domain, recipient, diagnostic)
        except Exception:
            log.failure("cannot record the hard bounce of {address}", address=recipient)

    @inlineCallbacks
    def _take_returned(self, entry, message):
        """
        Handle the recipients of an inbound message that are our return
        paths (see the module docstring); the recipients left to deliver
        to, with each verified report's sender in place of its return path.
        """
        pending = []
        counted = set()
        for address in entry.pending:
            path = self._return_paths.parse(address)
            if path is None:
                pending.append(address)
                continue
            sender = yield self._returned(entry.queue_id, path, message, counted)
            if sender is not None and sender not in pending:
                pending.append(sender)
        return pending

    @inlineCallbacks
    def _returned(self, queue_id, path, message, counted):
        """
        Count a report to return path C{path} against the one recipient
        it is signed for, unless in C{counted} already; the sender it
        verifies for, or C{None}.
        """
        report = dsn.returned_report(message)
        bound = None if report is None else _bound(self._return_paths, path, report)
        if bound is None:
            log.info("dropped {queue_id}: unsigned, forged or expired report to the return path of {sent}",
                     queue_id=queue_id, sent=path.queue_id)
            return None
        sender, recipient = bound
        hard = [g for g in report.groups
                if g.failed and is_hard_status(g.status) and recipient in _lowered(g.recipients)]
        if hard and (sender, recipient) not in counted:
            counted.add((sender, recipient))
            yield self._hard_bounce(sender, recipient, hard[0].diagnostic)
        log.info("report {queue_id} on {sent} to {recipient} goes to {sender}",
                 queue_id=queue_id, sent=path.queue_id, recipient=recipient, sender=sender)
        return sender


def _lowered(addresses):
    return {a.lower() for a in addresses}


def _bound(return_paths, path, report):
    """The C{(sender, recipient)} the report names that C{path} is signed for, or C{None}."""
    for sender in report.senders:
        for group in report.groups:
            for recipient in group.recipients:
                if return_paths.verify(path, sender, recipient):
                    return sender.lower(), recipient.lower()
    return None


def _log_delivery(entry, result, waiting, now):
    """The mail log's line for one recipient of an attempt; C{waiting}: it is tried again."""
    outcome = result.outcome
    if outcome.delivered:
        kind = maillog.DELIVERED
    elif result.suppressed:
        kind = maillog.SUPPRESSED
    else:
        kind = maillog.DEFERRED if waiting else maillog.BOUNCED
    host, _, bracketed = outcome.remote.partition(" [")
    received = entry.envelope.received_at
    maillog.emit(
        log, maillog.DELIVERY, queue_id=entry.queue_id, recipient=outcome.recipient, route=result.route,
        host=host or None, address=outcome.peer or bracketed.rstrip("]") or None, source=outcome.source or None,
        tls=outcome.tls, tls_verified=outcome.tls_verified, delay=now - received if received else None,
        reply="%d %s" % (outcome.code, outcome.text), outcome=kind,
    )


def _expired(recipient, last_error, reply):
    """The outcome reported for a recipient still deferred at expiry: its last error."""
    code, _, text = (last_error or "").partition(" ")
    if not code.isdigit():
        return Outcome(recipient, 451, "4.4.7 delivery time expired")
    return Outcome(recipient, int(code), text, reply=reply)
