"""
What may be a message flag (RFC 3501 9: C{flag}, a system flag or an
atom keyword): one rule for the flags a client sends (STORE, APPEND) and
the flags an import brings from another server or a file, since both end
up in C{FLAGS (...)} answers, where anything but an atom breaks the
client's parse.
"""

import re

from trekmail.imap.view import SYSTEM_FLAGS

_SYSTEM_FLAGS = {f.lower(): f for f in SYSTEM_FLAGS}
_FLAG = re.compile(r"\\?[!#$&'+\-./0-9:;<=>?@A-Z^_`a-z|}~]+")


def well_formed(name):
    """Whether C{name} is an atom, with an optional leading backslash."""
    return _FLAG.fullmatch(name) is not None


def canonical(name):
    """
    C{name} as it is stored: a system flag in RFC 3501's spelling
    (C{\\seen} is C{\\Seen}), a keyword as it is, or None when it is
    neither (malformed, or a backslash name that is no system flag).
    """
    if not well_formed(name):
        return None
    if name.startswith("\\"):
        return _SYSTEM_FLAGS.get(name.lower())
    return name
