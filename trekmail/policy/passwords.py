"""
The password policy for every password the product sets (mailbox, and
later owner and operator): at least L{MIN_LENGTH} characters, at most
L{MAX_LENGTH}, and not one of the common passwords that guessing attacks
try first (NIST SP 800-63B section 5.1.1.2: length and a blocklist, no
composition rules).  The blocklist is a data file in this package, read
once; the comparison ignores case and surrounding spaces.  It imports
nothing of TrekMail, so the realm's verbs can apply it however they are
reached (CLI, admin API, dashboard).
"""

import functools
import os

MIN_LENGTH = 10
MAX_LENGTH = 1024
COMMON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "common-passwords.txt")


@functools.lru_cache(maxsize=1)
def common_passwords():
    with open(COMMON, encoding="utf-8") as f:
        return frozenset(line.strip() for line in f if line.strip() and not line.startswith("#"))


def password_problem(password):
    """Why C{password} may not be set, as a sentence for the user, or C{None}."""
    if not password or not password.strip():
        return "the password is empty"
    if len(password) > MAX_LENGTH:
        return "the password is longer than %d characters" % (MAX_LENGTH,)
    if len(password) < MIN_LENGTH:
        return ("the password is too short: use at least %d characters (a few unrelated words make a strong one)"
                % (MIN_LENGTH,))
    if password.strip().lower() in common_passwords():
        return "the password is one of the most common passwords, which attackers try first: choose another"
    return None

