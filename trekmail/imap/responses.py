"""
Tagged IMAP replies (RFC 3501 7.1), built in one place: the tag, the
status (OK, NO or BAD), the response code in brackets (RFC 5530's
UNAVAILABLE, AUTHENTICATIONFAILED, TRYCREATE, LIMIT, ALREADYEXISTS,
NONEXISTENT, SERVERBUG ...; RFC 4315's APPENDUID) and the text.  A
client acts on the code, not the text, so one helper keeps every code
in the same place of the line.
"""


def tagged(tag, status, text, code=None):
    """The tagged line C{tag status [code] text}, CRLF-ended, as bytes."""
    if code is None:
        return b"%s %s %s\r\n" % (tag.encode(), status.encode(), text.encode())
    return b"%s %s [%s] %s\r\n" % (tag.encode(), status.encode(), code.encode(), text.encode())
