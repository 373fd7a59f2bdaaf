"""TensorFlow for the host command lines: checked for without importing it, then imported quietly.

Host-side only (the device side, ``benchmarks`` without ``host``, never imports this module); every host
CLI (invo-train, invo-convert, invo-quantize, invo-report) calls ``require_tensorflow`` before it judges its
arguments and ``import_tensorflow_quietly`` after, so ``--help`` and argument errors need no TensorFlow.
"""

import logging
import os

from invo_base.plumbing import native_logs_silenced

HOST_ONLY = ("this command runs on the host and needs TensorFlow: pip install 'involution-tflite[host]' "
             "(a board needs only invo-bench)")


def require_tensorflow():
    """Fails at once, without importing it, where TensorFlow is not installed (a board): the host tools check
    this before their arguments, whose checks would otherwise name a file when the cause is the machine."""
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        raise RuntimeError(HOST_ONLY)


def import_tensorflow_quietly():
    """Host tools: TensorFlow, imported with its oneDNN/absl banners and C++ INFO lines hidden.

    Called after a command line is parsed (so --help needs no TensorFlow); where TensorFlow is not
    installed (a board), the error says what to install.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        with native_logs_silenced():
            import tensorflow  # noqa: F401
    except ImportError:
        raise RuntimeError(HOST_ONLY) from None
