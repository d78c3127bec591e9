"""
LIST and LSUB mailbox patterns (RFC 3501 section 6.3.8) matched in time
linear in the mailbox name.

A pattern compiled to a regular expression backtracks: forty C{*} before
a letter that never comes held the reactor for minutes.  Here the pattern
is a small automaton whose set of live states is one integer bitmask
(shift-and): each character of the name costs a handful of integer
operations whatever the pattern holds, and runs of wildcards collapse to
one, since C{**} matches what C{*} does and any run holding a C{*} matches
what a lone C{*} does.
"""

DELIMITER = "."

MAX_PATTERN = 1024
"""Longest reference + pattern considered; a folder name is at most 255 bytes, so a longer pattern can only match by wildcards a shorter one would have."""


class MailboxPattern:
    """A compiled reference + pattern; L{match} says whether a folder name is listed."""

    def __init__(self, reference, pattern):
        text = pattern if pattern.startswith(DELIMITER) else reference + pattern
        if text.upper().startswith("INBOX"):
            text = "INBOX" + text[5:]
        tokens = _collapse(text[:MAX_PATTERN])
        self._accept = 1 << len(tokens)
        self._star = self._percent = 0
        self._literal = {}
        for position, token in enumerate(tokens):
            bit = 1 << position
            if token == "*":
                self._star |= bit
            elif token == "%":
                self._percent |= bit
            else:
                self._literal[token] = self._literal.get(token, 0) | bit
        self._start = self._closure(1)

    def _closure(self, states):
        """Let every live state stand on a wildcard step past it too: a wildcard matches nothing as well."""
        return states | ((states & (self._star | self._percent)) << 1)

    def match(self, name):
        states = self._start
        for character in name:
            following = ((states & self._literal.get(character, 0)) << 1) | (states & self._star)
            if character != DELIMITER:
                following |= states & self._percent
            states = self._closure(following)
            if not states:
                return False
        return bool(states & self._accept)


def _collapse(text):
    """The pattern's characters with each run of wildcards as one: C{*} if the run holds one, else C{%}."""
    tokens = []
    for character in text:
        if character in "*%" and tokens and tokens[-1] in ("*", "%"):
            if character == "*":
                tokens[-1] = "*"
            continue
        tokens.append(character)
    return tokens
