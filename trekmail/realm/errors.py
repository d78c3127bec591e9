"""
What the realm can refuse, as exceptions that carry meaning; the CLI, the
admin API and the protocols each translate them at their own edge.
"""


class RealmError(Exception):
    """A request the realm refuses; C{str()} is fit to show an operator."""


class InvalidInput(RealmError):
    pass


class NotFound(RealmError):
    pass


class Duplicate(RealmError):
    pass


class DirectoryUnavailable(Exception):
    """
    The account directory could not be asked (LDAP down, database locked).
    A temporary failure: never to be reported as a wrong password.
    """
