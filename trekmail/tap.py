"""The C{twistd trekmail} command line: options, then L{service.make_service}."""

import sys

from twisted.python import usage

from trekmail.config import Config, ConfigError, config_path


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, "configuration file (default: $TREKMAIL_CONFIG or etc/trekmail.ini)"],
    ]


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    from trekmail.service import make_service

    try:
        config = Config.from_file(config_path(options["config"]))
        return make_service(config, reactor)
    except ConfigError as e:
        sys.stderr.write("trekmail: configuration error: %s\n" % (e,))
        raise SystemExit(78)
