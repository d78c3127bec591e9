"""
Client autoconfiguration: Thunderbird's config-v1.1.xml and Outlook's POX
autodiscover, as resources driven with twisted.web's DummyRequest, and
end to end over real TLS to the https listener of the whole service,
checked for the elements their published schemas require.
"""

import http.client
import io
import xml.etree.ElementTree as ET

from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from tests.server_process import free_port
from tests.support import client_context, example_server, write_config
from trekmail.realm.errors import DirectoryUnavailable
from trekmail.realm.settings import ClientPorts, PublishedNames
from trekmail.service import make_service
from trekmail.web.autoconfig import OUTLOOK_SCHEMA, REQUEST_SCHEMA, RESPONSE_SCHEMA, OutlookAutodiscover, \
    ThunderbirdAutoconfig

PUBLISHED = PublishedNames(hostname="mail.test", spf_include="spf.test", dmarc_record="v=DMARC1; p=none",
                           ports=ClientPorts(submissions=465, submission=587, imaps=993, imap=None, https=443))

REQUEST = ("""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="%s">
  <Request>
    <EMailAddress>{address}</EMailAddress>
    <AcceptableResponseSchema>%s</AcceptableResponseSchema>
  </Request>
</Autodiscover>
""" % (REQUEST_SCHEMA, OUTLOOK_SCHEMA))

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Autodiscover><Request><EMailAddress>&lol2;@example.com</EMailAddress></Request></Autodiscover>
"""

RESPONSE = "{%s}" % (RESPONSE_SCHEMA,)
OUTLOOK = "{%s}" % (OUTLOOK_SCHEMA,)


class Directory:
    """Hosts the domains it is given; C{down} makes it unavailable."""

    def __init__(self, *domains, down=False):
        self.domains = domains
        self.down = down

    def domain(self, name):
        if self.down:
            return defer.fail(DirectoryUnavailable("database is locked"))
        return defer.succeed(("domain", "account") if name in self.domains else None)


def render(resource, request):
    """C{(code, body)} once the resource answered C{request}."""
    finished = request.notifyFinish()
    result = resource.render(request)
    if result is not NOT_DONE_YET:
        request.write(result)
        request.finish()
    return finished.addCallback(lambda _: (request.responseCode or 200, b"".join(request.written)))


def get(args=None, host=b"autoconfig.example.com"):
    request = DummyRequest([b""])
    request.method = b"GET"
    request.args = args or {}
    request.requestHeaders.setRawHeaders(b"host", [host])
    return request


def post(body):
    request = DummyRequest([b""])
    request.method = b"POST"
    request.content = io.BytesIO(body)
    return request


def thunderbird_problems(document):
    """What the clientConfig document lacks of what config-v1.1's schema requires."""
    problems = []
    root = ET.fromstring(document)
    if root.tag != "clientConfig" or root.get("version") != "1.1":
        problems.append("root is not clientConfig version 1.1")
    provider = root.find("emailProvider")
    if provider is None or not provider.get("id") or provider.find("domain") is None:
        return problems + ["no emailProvider with id and domain"]
    for kind in ("incomingServer", "outgoingServer"):
        servers = provider.findall(kind)
        if not servers:
            problems.append("no %s" % (kind,))
        for server in servers:
            for field in ("hostname", "port", "socketType", "authentication", "username"):
                if not (server.findtext(field) or "").strip():
                    problems.append("%s without %s" % (kind, field))
    return problems


def outlook_protocols(document):
    """C{{Type: {field: text}}} of the autodiscover response, its required elements asserted."""
    root = ET.fromstring(document)
    assert root.tag == RESPONSE + "Autodiscover", root.tag
    account = root.find(OUTLOOK + "Response/" + OUTLOOK + "Account")
    assert account is not None, document
    assert account.findtext(OUTLOOK + "AccountType") == "email"
    assert account.findtext(OUTLOOK + "Action") == "settings"
    protocols = {}
    for protocol in account.findall(OUTLOOK + "Protocol"):
        fields = {child.tag[len(OUTLOOK):]: child.text for child in protocol}
        for field in ("Type", "Server", "Port", "SSL"):
            assert fields.get(field), (field, document)
        protocols[fields["Type"]] = fields
    return protocols


class ThunderbirdTests(unittest.TestCase):
    resource = ThunderbirdAutoconfig(Directory("example.com"), PUBLISHED)

    @defer.inlineCallbacks
    def test_by_address(self):
        code, body = yield render(self.resource, get({b"emailaddress": [b"Alice@Example.com"]}, host=b"mail.test"))
        self.assertEqual(code, 200)
        self.assertEqual(thunderbird_problems(body), [])
        provider = ET.fromstring(body).find("emailProvider")
        self.assertEqual(provider.get("id"), "example.com")
        incoming = [(s.findtext("port"), s.findtext("socketType")) for s in provider.findall("incomingServer")]
        self.assertEqual(incoming, [("993", "SSL")], "no imap listener: not offered")
        outgoing = [(s.findtext("port"), s.findtext("socketType")) for s in provider.findall("outgoingServer")]
        self.assertEqual(outgoing, [("465", "SSL"), ("587", "STARTTLS")])
        self.assertEqual({s.findtext("hostname") for s in provider}, {None, "mail.test"})

    @defer.inlineCallbacks
    def test_by_host(self):
        code, body = yield render(self.resource, get(host=b"autoconfig.example.com:443"))
        self.assertEqual(code, 200)
        self.assertEqual(ET.fromstring(body).find("emailProvider/domain").text, "example.com")

    @defer.inlineCallbacks
    def test_unknown_domain_is_404(self):
        code, body = yield render(self.resource, get({b"emailaddress": [b"bob@elsewhere.example"]}))
        self.assertEqual(code, 404)

    @defer.inlineCallbacks
    def test_bad_address_is_400_as_plain_text(self):
        request = get({b"emailaddress": [b"<script>alert(1)</script>"]})
        code, body = yield render(self.resource, request)
        self.assertEqual(code, 400)
        self.assertIn(b"is not an email address", body)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"])
        self.assertEqual(request.responseHeaders.getRawHeaders(b"x-content-type-options"), [b"nosniff"])

    @defer.inlineCallbacks
    def test_directory_down_is_503(self):
        resource = ThunderbirdAutoconfig(Directory(down=True), PUBLISHED)
        code, body = yield render(resource, get({b"emailaddress": [b"alice@example.com"]}))
        self.assertEqual(code, 503)
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_values_are_escaped(self):
        published = PublishedNames(hostname="mail.test<script>&", spf_include="", dmarc_record="",
                                   ports=PUBLISHED.ports)
        code, body = yield render(ThunderbirdAutoconfig(Directory("example.com"), published),
                                  get({b"emailaddress": [b"alice@example.com"]}))
        self.assertNotIn(b"<script>", body)
        self.assertIn(b"mail.test&lt;script&gt;&amp;", body)
        self.assertEqual(ET.fromstring(body).find("emailProvider/incomingServer/hostname").text, "mail.test<script>&")


class OutlookTests(unittest.TestCase):
    resource = OutlookAutodiscover(Directory("example.com"), PUBLISHED)

    @defer.inlineCallbacks
    def test_answer(self):
        code, body = yield render(self.resource, post(REQUEST.format(address="alice@example.com").encode()))
        self.assertEqual(code, 200)
        protocols = outlook_protocols(body)
        self.assertEqual(protocols["IMAP"]["Port"], "993")
        self.assertEqual(protocols["IMAP"]["Encryption"], "SSL")
        self.assertEqual(protocols["SMTP"]["Port"], "465")
        self.assertEqual(protocols["SMTP"]["LoginName"], "alice@example.com")
        self.assertEqual(protocols["SMTP"]["Server"], "mail.test")

    @defer.inlineCallbacks
    def test_unknown_domain_is_404(self):
        code, body = yield render(self.resource, post(REQUEST.format(address="bob@elsewhere.example").encode()))
        self.assertEqual(code, 404)

    @defer.inlineCallbacks
    def test_refusals(self):
        for body, message in [
            (BOMB, b"DOCTYPE"),
            (b"<Autodiscover><Request>", b"not well-formed"),
            (b"<Autodiscover/>", b"no EMailAddress"),
            (REQUEST.format(address="a" * 20000).encode(), b"longer than"),
            (REQUEST.format(address="&lt;script&gt;").encode(), b"is not an email address"),
            (b"<a>" * 300 + b"</a>" * 300, b"more than"),
        ]:
            code, answer = yield render(self.resource, post(body))
            self.assertEqual(code, 400, body[:60])
            self.assertIn(message, answer)


class EndToEndTests(unittest.TestCase):
    """The whole service: submissions, submission and imaps listeners named in the answers, https serving them."""

    def setUp(self):
        self.ports = {name: free_port() for name in ("https", "submissions", "submission", "imaps")}
        path = write_config(self.mktemp(), "[dns]\nnameservers = 127.0.0.1:9\n", **{
            name: "tcp:%d:interface=127.0.0.1" % port for name, port in self.ports.items()})
        self.service = make_service(example_server(path), reactor)
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(lambda: task.deferLater(reactor, 0.2, lambda: None))
        self.addCleanup(self.service.stopService)

    def fetch(self, method, path, body=None, headers=None):
        def request():
            connection = http.client.HTTPSConnection("127.0.0.1", self.ports["https"], timeout=10,
                                                     context=client_context())
            try:
                connection.request(method, path, body=body, headers=headers or {})
                response = connection.getresponse()
                return response.status, response.getheader("content-type"), response.read()
            finally:
                connection.close()
        return threads.deferToThread(request)

    @defer.inlineCallbacks
    def test_thunderbird(self):
        for path in ("/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.com",
                     "/mail/config-v1.1.xml?emailaddress=alice@example.com"):
            status, content_type, body = yield self.fetch("GET", path)
            self.assertEqual((status, content_type), (200, "application/xml; charset=utf-8"), path)
            self.assertEqual(thunderbird_problems(body), [])
            ports = {s.findtext("port") for s in ET.fromstring(body).iter() if s.tag.endswith("Server")}
            self.assertEqual(ports, {str(self.ports[n]) for n in ("submissions", "submission", "imaps")})
        status, _, _ = yield self.fetch("GET", "/mail/config-v1.1.xml?emailaddress=alice@elsewhere.example")
        self.assertEqual(status, 404)

    @defer.inlineCallbacks
    def test_outlook(self):
        status, content_type, body = yield self.fetch(
            "POST", "/autodiscover/autodiscover.xml", REQUEST.format(address="alice@example.com").encode(),
            {"Content-Type": "text/xml"})
        self.assertEqual(status, 200)
        protocols = outlook_protocols(body)
        self.assertEqual(protocols["IMAP"]["Port"], str(self.ports["imaps"]))
        self.assertEqual(protocols["SMTP"]["Port"], str(self.ports["submissions"]))
        status, _, body = yield self.fetch("POST", "/Autodiscover/Autodiscover.xml", BOMB)
        self.assertEqual(status, 400)
        status, _, _ = yield self.fetch("GET", "/.well-known/caldav")
        self.assertEqual(status, 301, "the DAV redirects still share .well-known")
