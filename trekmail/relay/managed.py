"""
The managed route: deliver straight to each recipient domain's MX hosts
from our own source addresses.

Messages to the same destination share connections: a connection takes
the next waiting message after each one it sends (RSET, MAIL FROM, ...)
and closes when none is waiting, which is what makes relaying thousands
of messages a second to one destination cheap.

Source addresses (docs/sending-rules.md, "IP pools"): a sending domain
younger than L{NEW_DOMAIN_DAYS} days binds an address of the C{new} pool,
others rotate over C{warm}; a pool that is not configured binds nothing.
"""

import itertools
from collections import deque

from twisted.internet import endpoints, ssl
from twisted.internet.defer import gatherResults
from twisted.logger import Logger
from zope.interface import implementer

from trekmail.delivery import ITransport, outcomes
from trekmail.relay import client, mx

NEW_DOMAIN_DAYS = 8
"""docs/sending-rules.md, "IP pools": domains younger than this many days send from the C{new} pool."""

CONNECT_TIMEOUT = 30

log = Logger()


class SourcePools:
    """Which local address an outbound connection binds."""

    def __init__(self, pools, clock):
        self._clock = clock
        self._pools = {name: tuple(addresses) for name, addresses in pools.items()}
        self._cycles = {name: itertools.cycle(a) for name, a in self._pools.items() if a}

    def pool_for(self, sending_domain):
        """C{"new"} or C{"warm"}: a domain's pool by its age."""
        if sending_domain is not None:
            age_days = (self._clock.seconds() - sending_domain.created) / 86400.0
            if age_days < NEW_DOMAIN_DAYS:
                return "new"
        return "warm"

    def address(self, pool):
        cycle = self._cycles.get(pool)
        return next(cycle) if cycle else None


class _Slot:
    """
    One connection to a destination, across its retries.  While
    C{reserved}, one waiting message is held for it: it was opened for
    that message, and a busy connection taking it instead would leave this
    one to do its TLS handshake and quit with nothing to send.
    """

    reserved = False


class _Destination:
    """
    The waiting messages and open connections for one recipient domain
    from one pool.  A connection is opened only for a message that no
    connection on its way is going to take (C{reserved} counts those).
    """

    def __init__(self, relay, domain, pool):
        self.relay = relay
        self.domain = domain
        self.pool = pool
        self.jobs = deque()
        self.connections = 0
        self.reserved = 0

    def add(self, job):
        self.jobs.append(job)
        self._open()

    def _open(self):
        while len(self.jobs) > self.reserved and self.connections < self.relay.connections_per_destination:
            slot = _Slot()
            self._claim(slot)
            self.connections += 1
            d = mx.mail_hosts(self.relay.resolver, self.domain)
            d.addCallbacks(self._try_hosts, self._lookup_failed, (slot,), errbackArgs=(slot,))

    def _claim(self, slot):
        """Whether C{slot} has a message to connect for, reserving a free one if it holds none."""
        if slot.reserved:
            return bool(self.jobs)
        if len(self.jobs) <= self.reserved:
            return False
        slot.reserved = True
        self.reserved += 1
        return True

    def _release(self, slot):
        if slot.reserved:
            slot.reserved = False
            self.reserved -= 1

    def _taker(self, slot):
        """
        C{next_job} for C{slot}'s connection: its first call gets the
        message held for it; later ones only messages no other connection
        is on its way for.
        """
        def next_job():
            if slot.reserved:
                self._release(slot)
            elif len(self.jobs) <= self.reserved:
                return None
            return self.jobs.popleft() if self.jobs else None

        return next_job

    def _lookup_failed(self, reason, slot):
        reason.trap(mx.LookupFailed)
        error = reason.value
        self._fail_waiting(550 if error.permanent else 451, str(error), False)
        self._closed(slot)

    def _try_hosts(self, hosts, slot):
        candidates = [(host, address) for host, addresses in hosts for address in addresses]
        self._try(slot, candidates, 0, None)

    def _try(self, slot, candidates, index, last_error, plain=False):
        """
        Connect to candidate C{index}, if a message is waiting for this
        connection.  A host that took no message (refused, closed, or
        answered 4xx/5xx before MAIL) makes way for the next; a failed
        STARTTLS is retried once in the clear, as opportunistic TLS must
        not make mail undeliverable.
        """
        if not self._claim(slot):
            self._closed(slot)
            return
        if index >= len(candidates):
            code, text, reply = last_error or (451, "4.4.1 no MX host answered", False)
            self._fail_waiting(code, text, reply)
            self._closed(slot)
            return
        host, address = candidates[index]
        source = self.relay.pools.address(self.pool)
        endpoint = endpoints.TCP4ClientEndpoint(
            self.relay.reactor,
            address,
            self.relay.port,
            timeout=CONNECT_TIMEOUT,
            bindAddress=(source, 0) if source else None,
        )
        d = client.connect(
            endpoint,
            self.relay.hostname,
            self._taker(slot),
            tls_context=None if plain else self.relay.tls_context,
            remote="%s [%s]" % (host, address),
            clock=self.relay.reactor,
            clients=self.relay.clients,
        )

        def ended(connection):
            if connection.ran_out and connection.error is None:
                self._try(slot, candidates, index, None, plain)
            elif connection.transactions == 0:
                error = (connection.error + (connection.error_reply,) if connection.error
                         else (451, "4.4.2 %s [%s] closed the connection" % (host, address), False))
                if connection.tls_attempted and not plain:
                    self._try(slot, candidates, index, error, plain=True)
                else:
                    self._try(slot, candidates, index + 1, error)
            else:
                self._try(slot, candidates, 0, None)

        def failed(reason):
            text = "4.4.1 cannot connect to %s [%s]: %s" % (host, address, reason.getErrorMessage())
            self._try(slot, candidates, index + 1, (451, text, False))

        d.addCallbacks(ended, failed)

    def _fail_waiting(self, code, text, reply):
        jobs, self.jobs = self.jobs, deque()
        for job in jobs:
            job.finish(outcomes(job.recipients, code, text, reply=reply))

    def _closed(self, slot):
        self._release(slot)
        self.connections -= 1
        self._open()
        if self.connections == 0 and not self.jobs:
            self.relay.forget(self)


@implementer(ITransport)
class ManagedRelay:
    """Delivers to recipients' MX hosts; see the module docstring."""

    def __init__(self, *, reactor, resolver, hostname, port=25, pools=None, tls_context=None,
                 connections_per_destination=4, return_paths=None):
        self.reactor = reactor
        self.resolver = resolver
        self.hostname = hostname
        self.port = port
        self.pools = pools or SourcePools({}, reactor)
        self.tls_context = tls_context if tls_context is not None else ssl.CertificateOptions()
        self.connections_per_destination = connections_per_destination
        self.return_paths = return_paths
        self.clients = set()
        self._destinations = {}

    def stop(self):
        """Close every connection; fires once they are all gone."""
        waits = [c.closed for c in self.clients]
        for c in list(self.clients):
            c.transport.abortConnection()
        return gatherResults(waits, consumeErrors=True)

    def deliver(self, sender, recipients, message, sending_domain=None, queue_id=None):
        """
        With C{return_paths} and the C{queue_id}, each recipient's copy
        leaves in a transaction of its own, from its signed return path
        (L{trekmail.queue.returnpath}), so that a report can be told from
        a forgery; the connections are shared all the same.  A report
        (C{sender} C{""}) keeps the null sender.
        """
        by_domain = {}
        for recipient in recipients:
            by_domain.setdefault(recipient.rpartition("@")[2].lower(), []).append(recipient)
        pool = self.pools.pool_for(sending_domain)
        waits = []
        for domain, group in by_domain.items():
            if self.return_paths is not None and sender and queue_id:
                jobs = [client.Job(self.return_paths.address(queue_id, sender, r), (r,), message) for r in group]
            else:
                jobs = [client.Job(sender, tuple(group), message)]
            key = (domain, pool)
            destination = self._destinations.get(key)
            if destination is None:
                destination = self._destinations[key] = _Destination(self, domain, pool)
            for job in jobs:
                destination.add(job)
                waits.append(job.done)
        d = gatherResults(waits)
        d.addCallback(lambda lists: [o for results in lists for o in results])
        return d

    def forget(self, destination):
        key = (destination.domain, destination.pool)
        if self._destinations.get(key) is destination:
            del self._destinations[key]
