"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class QatcmpError(Exception):
    """A problem the user can fix (bad config, bad input, unreachable server...).

    The message must stand alone on one line; the CLI prints it without a traceback.
    """

    exit_code = 2


class ConfigError(QatcmpError):
    """servers.yaml (or a command-line option) is invalid."""


class DataError(QatcmpError):
    """A dataset or run folder cannot be read."""
