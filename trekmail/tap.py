"""The C{twistd trekmail} command line: options, then L{service.make_service}."""

import os
import sys

from twisted.python import usage

from trekmail.config import Config, ConfigError, config_path


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, "configuration file (default: $TREKMAIL_CONFIG or etc/trekmail.ini)"],
    ]


PRIVATE_UMASK = 0o077
"""
Mail, queue, keys, index and log are the server's alone: everything
created from here on (by this process and the IMAP workers it starts)
is 0700 / 0600, whichever module creates it.  twistd opens its log file
after C{makeService}, so C{twistd.log} is covered too; C{twistd --umask}
still overrides this when given.
"""


def makeService(options, reactor=None):
    os.umask(PRIVATE_UMASK)
    if reactor is None:
        from twisted.internet import reactor
    from trekmail.service import make_service

    try:
        config = Config.from_file(config_path(options["config"]))
        return make_service(config, reactor)
    except ConfigError as e:
        sys.stderr.write("trekmail: configuration error: %s\n" % (e,))
        raise SystemExit(78)
