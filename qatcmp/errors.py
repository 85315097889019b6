"""User-facing errors: the CLI prints their message as one line and exits non-zero."""

import errno


class QatcmpError(Exception):
    """A problem the user can fix (bad config, bad input, unreachable server...).

    The message must stand alone on one line; the CLI prints it without a traceback.
    """

    exit_code = 2


class ConfigError(QatcmpError):
    """servers.yaml (or a command-line option) is invalid."""


class DataError(QatcmpError):
    """A dataset or run folder cannot be read."""


def describe_os_error(exc: OSError) -> str:
    """One line for what the machine refused: a full disk, a read-only folder..."""
    where = f"{exc.filename}: " if exc.filename else ""
    text = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        text += "; free some space and run the same command again (what was written is kept)"
    return where + text
