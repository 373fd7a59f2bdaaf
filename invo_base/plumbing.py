"""What every command-line tool of the project shares: one-line errors, atomic writes, quiet native logs.

Device-side and import-light (click and the standard library): the host tools reuse it.  Importing
TensorFlow is the host's business (``involution.host_env``).
"""

import atexit
import contextlib
import functools
import os
import sys
import tempfile

import click


def one_line(exc, limit=400):
    """The first meaningful line of an exception's message, at most ``limit`` characters."""
    text = str(exc).strip() or type(exc).__name__
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip() and not set(line.strip()) <= set("=-└ ")]
    line = lines[0] if lines else text
    return line if len(line) <= limit else line[: limit - 3] + "..."


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


def json_text(obj):
    """``obj`` as indented, strict JSON: a non-finite float (an overflowed output, an infinite difference) becomes
    null, since Python would write NaN or Infinity, which are not JSON and which jq and JavaScript refuse; a
    numpy scalar becomes its number; any other object unknown to JSON, its ``str``."""
    import json
    import math

    import numpy as np

    def clean(value):
        if isinstance(value, dict):
            return {key: clean(v) for key, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    return json.dumps(clean(obj), indent=2, default=str, allow_nan=False)


def write_atomic(path, data):
    """Writes bytes or text to ``path`` whole or not at all: a temporary file beside it, then a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".invo-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for the temporary name only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_exit_hook = False


def _silence_fd2():
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)


def _flush_c_stdio():
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def native_logs_silenced():
    """Hides the runtimes' C++ INFO/WARNING chatter on fds 1 and 2 (INVO_DEBUG=1 shows it)."""
    if os.environ.get("INVO_DEBUG"):
        yield
        return
    global _exit_hook
    if not _exit_hook:  # the runtimes also log when their objects die at interpreter exit
        _exit_hook = True
        atexit.register(_silence_fd2)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        _flush_c_stdio()  # C code's buffered printf output belongs to the silenced fds
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
