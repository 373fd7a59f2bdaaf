"""One-line errors for every command-line tool of the project (host tools reuse this)."""

import functools
import os
import sys

import click


class UserError(Exception):
    """An error whose message is meant for the user as it is."""


def one_line(exc):
    """The first meaningful line of an exception's message."""
    text = str(exc).strip() or type(exc).__name__
    lines = [l.strip() for l in text.splitlines() if l.strip() and not set(l.strip()) <= set("=-└ ")]
    line = lines[0] if lines else text
    return line if len(line) <= 400 else line[:397] + "..."


def cli_errors(func):
    """Turns any exception into ``Error: <one line>`` and exit status 1 (``INVO_DEBUG=1`` shows tracebacks)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the one place that reports every failure
            if os.environ.get("INVO_DEBUG"):
                raise
            click.echo(f"Error: {one_line(exc)}", err=True)
            sys.exit(1)

    return wrapper
