"""
A bounded reader for the small XML documents clients post (Outlook's
autodiscover request): the body is capped before parsing, and a document
with a DOCTYPE is refused outright, so no entity is ever declared, let
alone expanded ("billion laughs", external entities).
"""

from xml.parsers import expat

MAX_BODY = 16384
"""An autodiscover request is a few hundred bytes."""

MAX_ELEMENTS = 256


class BadDocument(ValueError):
    """The body is not a small, plain XML document: the message says why."""


def element_texts(body, wanted):
    """
    C{{local name: text}} of the first element named each of C{wanted}
    (local names: namespaces are ignored), in C{body} (bytes).

    @raise BadDocument: too long, not well-formed, a DOCTYPE, too many elements.
    """
    if len(body) > MAX_BODY:
        raise BadDocument("the request is longer than %d bytes" % (MAX_BODY,))
    parser = expat.ParserCreate(namespace_separator=" ")
    found, stack, count = {}, [], [0]

    def refuse(*args):
        raise BadDocument("a DOCTYPE or entity declaration is not accepted")

    def start(name, attributes):
        count[0] += 1
        if count[0] > MAX_ELEMENTS:
            raise BadDocument("the request has more than %d elements" % (MAX_ELEMENTS,))
        local = name.rpartition(" ")[2]
        stack.append((local, []))

    def end(name):
        local, pieces = stack.pop()
        if local in wanted and local not in found:
            found[local] = "".join(pieces).strip()

    def text(data):
        if stack:
            stack[-1][1].append(data)

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(body, True)
    except expat.ExpatError as e:
        raise BadDocument("the request is not well-formed XML: %s" % (expat.errors.messages.get(e.code, e),)) from None
    return found
