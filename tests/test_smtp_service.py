"""The listener builders the lead wires into make_service."""

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from tests.smtp_fakes import FakeQueue
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
        implicit, starttls = (s.factory for s in services)
        self.assertIsInstance(starttls, SubmissionFactory)
        self.assertFalse(starttls.implicit_tls)
        self.assertTrue(implicit.wrappedFactory.implicit_tls)
        self.assertIs(implicit.wrappedFactory.logins, starttls.logins)
        self.assertIs(starttls.queue, queue)
        mx = mx_service(components, queue)
        self.assertIsInstance(mx, StreamServerEndpointService)
        self.assertIsInstance(mx.factory, MXFactory)

    def test_unconfigured_listeners(self):
        components = self.components()
        self.assertEqual(submission_services(components, FakeQueue()), [])
        self.assertIsNone(mx_service(components, FakeQueue()))
