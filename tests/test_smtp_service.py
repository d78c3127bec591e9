"""The listener builders the lead wires into make_service."""

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from tests.fakes import FakeQueue
from tests.support import write_config
from trekmail.config import Config
from trekmail.service import Components, mx_service, submission_services
from trekmail.smtp.mx import MXFactory
from trekmail.smtp.submission import SubmissionFactory


class BuilderTests(unittest.TestCase):
    def components(self, **listen):
        components = Components(Config.from_file(write_config(self.mktemp(), **listen)), MemoryReactorClock())
        self.addCleanup(components.database.db.close)
        return components

    def test_configured_listeners(self):
        components = self.components(submissions="tcp:10465", submission="tcp:10587", mx="tcp:10025")
        queue = FakeQueue()
        services = submission_services(components, queue)
        self.assertEqual(len(services), 2)
        implicit_capped, starttls_capped = (s.factory for s in services)
        self.assertIs(implicit_capped.caps, starttls_capped.caps)
        implicit, starttls = implicit_capped.wrappedFactory.wrappedFactory, starttls_capped.wrappedFactory
        self.assertIsInstance(starttls, SubmissionFactory)
        self.assertFalse(starttls.implicit_tls)
        self.assertTrue(implicit.implicit_tls)
        self.assertIs(implicit.logins, starttls.logins)
        self.assertIs(starttls.queue, queue)
        mx = mx_service(components, queue)
        self.assertIsInstance(mx, StreamServerEndpointService)
        self.assertIsInstance(mx.factory.wrappedFactory, MXFactory)
        self.assertEqual((mx.factory.caps.total, mx.factory.caps.per_address), (1000, 20))
        self.assertIs(mx.factory.wrappedFactory.intake, starttls.intake)

    def test_unconfigured_listeners(self):
        components = self.components()
        self.assertEqual(submission_services(components, FakeQueue()), [])
        self.assertIsNone(mx_service(components, FakeQueue()))
