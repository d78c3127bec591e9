"""
Client autoconfiguration on the C{https} listener, so that a mail client
given only an address and a password finds the servers by itself:

- Thunderbird's autoconfig (the "config-v1.1.xml" format, fetched from
  C{/.well-known/autoconfig/mail/config-v1.1.xml} and
  C{/mail/config-v1.1.xml?emailaddress=ADDRESS}, on C{autoconfig.DOMAIN}
  or the domain itself);
- Outlook's POX autodiscover (C{POST /autodiscover/autodiscover.xml}, the
  2006 request and 2006a response schemas).

Both answer with this server's host name and the ports its listeners
bind (L{trekmail.realm.settings.PublishedNames}), and only for a domain
hosted here: anything else gets 404, so the answers never vouch for a
server that would refuse the login.  Every value goes through
ElementTree, which escapes it.
"""

import xml.etree.ElementTree as ET

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from trekmail.realm.admin import check_address, check_domain
from trekmail.realm.errors import DirectoryUnavailable, InvalidInput
from trekmail.web.podxml import MAX_BODY, BadDocument, element_texts

XML = b"application/xml; charset=utf-8"
REQUEST_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"

INCOMING = (("imaps", "SSL"), ("imap", "STARTTLS"))
OUTGOING = (("submissions", "SSL"), ("submission", "STARTTLS"))
"""Each listener and the socket type it speaks, the preferred first (RFC 8314: implicit TLS)."""


def _text(parent, tag, value):
    ET.SubElement(parent, tag).text = str(value)


def _document(root):
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def thunderbird_config(domain, published):
    """The C{clientConfig} document for C{domain}."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    _text(provider, "domain", domain)
    _text(provider, "displayName", domain)
    _text(provider, "displayShortName", domain)
    for servers, element, kind in ((INCOMING, "incomingServer", "imap"), (OUTGOING, "outgoingServer", "smtp")):
        for name, socket_type in servers:
            port = getattr(published.ports, name)
            if port is None:
                continue
            server = ET.SubElement(provider, element, type=kind)
            _text(server, "hostname", published.hostname)
            _text(server, "port", port)
            _text(server, "socketType", socket_type)
            _text(server, "authentication", "password-cleartext")
            _text(server, "username", "%EMAILADDRESS%")
    return _document(root)


def outlook_response(address, published):
    """The autodiscover C{Response} for C{address}: one IMAP and one SMTP protocol, the preferred listeners."""
    root = ET.Element("Autodiscover", xmlns=RESPONSE_SCHEMA)
    account = ET.SubElement(ET.SubElement(root, "Response", xmlns=OUTLOOK_SCHEMA), "Account")
    _text(account, "AccountType", "email")
    _text(account, "Action", "settings")
    for servers, kind in ((INCOMING, "IMAP"), (OUTGOING, "SMTP")):
        offered = [(name, socket_type) for name, socket_type in servers if getattr(published.ports, name) is not None]
        if not offered:
            continue
        name, socket_type = offered[0]
        protocol = ET.SubElement(account, "Protocol")
        _text(protocol, "Type", kind)
        _text(protocol, "Server", published.hostname)
        _text(protocol, "Port", getattr(published.ports, name))
        _text(protocol, "DomainRequired", "off")
        _text(protocol, "LoginName", address)
        _text(protocol, "SPA", "off")
        _text(protocol, "SSL", "on")
        _text(protocol, "Encryption", "SSL" if socket_type == "SSL" else "TLS")
        _text(protocol, "AuthRequired", "on")
    return _document(root)


class _Answer(Resource):
    """Looks the domain up in the directory, then answers; the request may be gone by then."""

    isLeaf = True
    log = Logger()

    def __init__(self, directory, published):
        super().__init__()
        self._directory = directory
        self._published = published

    def _answer(self, request, domain, render):
        gone = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def found(hosted):
            if hosted is None:
                return 404, b"text/plain; charset=utf-8", b"no such domain here\n"
            return 200, XML, render()

        def unavailable(failure):
            failure.trap(DirectoryUnavailable)
            self.log.warn("autoconfig: the directory cannot answer: {error}", error=failure.value)
            return 503, b"text/plain; charset=utf-8", b"try again later\n"

        def send(answer):
            if gone:
                return
            code, content_type, body = answer
            _reply(request, code, body, content_type)

        d = self._directory.domain(domain)
        d.addCallbacks(found, unavailable).addCallback(send)
        d.addErrback(lambda failure: self.log.failure("autoconfig answer failed", failure))
        return NOT_DONE_YET


def _reply(request, code, body, content_type=b"text/plain; charset=utf-8"):
    request.setResponseCode(code)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"content-length", b"%d" % (len(body),))
    request.write(body)
    request.finish()


def _host_domain(request):
    """The domain a request without C{emailaddress} asks about: its Host, less C{autoconfig.} and any port."""
    name = (request.getHeader(b"host") or b"").decode("ascii", "replace").partition(":")[0]
    return name[len("autoconfig."):] if name.lower().startswith("autoconfig.") else name


class ThunderbirdAutoconfig(_Answer):
    def render_GET(self, request):
        addresses = request.args.get(b"emailaddress") or []
        try:
            if addresses:
                domain = check_address(addresses[0].decode("utf-8", "replace")).rpartition("@")[2]
            else:
                domain = check_domain(_host_domain(request))
        except InvalidInput as e:
            _reply(request, 400, ("%s\n" % (e,)).encode("utf-8"))
            return NOT_DONE_YET
        return self._answer(request, domain, lambda: thunderbird_config(domain, self._published))


class OutlookAutodiscover(_Answer):
    def render_POST(self, request):
        body = request.content.read(MAX_BODY + 1)
        try:
            fields = element_texts(body, ("EMailAddress",))
            if "EMailAddress" not in fields:
                raise BadDocument("the request names no EMailAddress")
            address = check_address(fields["EMailAddress"])
        except (BadDocument, InvalidInput) as e:
            _reply(request, 400, ("%s\n" % (e,)).encode("utf-8"))
            return NOT_DONE_YET
        domain = address.rpartition("@")[2]
        return self._answer(request, domain, lambda: outlook_response(address, self._published))


def mounts(directory, published):
    """C{(path, resource)} pairs for the https site: where each client looks."""
    thunderbird = ThunderbirdAutoconfig(directory, published)
    outlook = OutlookAutodiscover(directory, published)
    return [
        ((b".well-known", b"autoconfig", b"mail", b"config-v1.1.xml"), thunderbird),
        ((b"mail", b"config-v1.1.xml"), thunderbird),
        ((b"autodiscover", b"autodiscover.xml"), outlook),
        ((b"Autodiscover", b"Autodiscover.xml"), outlook),
    ]
