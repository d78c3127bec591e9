"""
IMAP's refusals in the mail log (L{trekmail.maillog} C{refused}, which the
metrics count): a connection over the caps (C{* BYE}) and a login over its
plan's connection caps (C{NO [LIMIT]}, docs/sending-rules.md, "IMAP
connections"), each with its reply and a reason word, as SMTP's are.
"""

from trekmail import maillog


def refuse(server, farewell, code, reason):
    """Log the refusal of C{server}'s client, then say C{farewell} and close."""
    maillog.emit(server.log, maillog.REFUSED, protocol="imap",
                 listener="imaps" if server.factory.implicit_tls else "imap",
                 client_address=server.peer, code=code, reason=reason)
    server._close(farewell)
