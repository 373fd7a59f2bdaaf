"""Every Keras class this package registers for saving, in one place: what a loader must import.

A model saved in one process names its layers' classes; a fresh process that loads it must have imported the
module that registers each of them.  ``tests/test_serializable.py`` reads every module of the package for
``register_keras_serializable`` and fails when one is missing here.
"""

import importlib

# Module -> the classes it registers under the package name "involution".
MODULES = {
    "involution.layer": ("Involution",),
    "involution.subsample": ("Subsample2D",),
    "involution.reference": ("InvolutionReference",),
}


def registered_classes():
    """{"involution>Name": class} of every class the package registers, its modules imported."""
    out = {}
    for module, names in MODULES.items():
        mod = importlib.import_module(module)
        for name in names:
            out[f"involution>{name}"] = getattr(mod, name)
    return out
