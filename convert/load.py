"""Loads a Keras model from .h5, .keras or a SavedModel directory, with the involution classes supplied.

Models built with the extract_patches ``Involution`` of the involution-tf
notebook or the keras.io example load without the user's code: a compatible
class stands in for the name ``Involution``.
"""

import importlib.util
import os
import re
import zipfile

from involution.layer import Involution
from involution.reference import InvolutionReference, KerasIoInvolution, NotebookInvolution


class ModelLoadError(ValueError):
    """The input is not a model this tool can load; one line for the user."""


def import_custom_module(path):
    """Imports a user's .py file so the layer classes it registers become loadable."""
    if not os.path.isfile(path):
        raise ModelLoadError(f"{path}: no such custom module")
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ModelLoadError(f"{path}: importing the custom module failed ({type(exc).__name__}: {exc})") from None
    return module


def _custom_objects(patch_class):
    objects = {"Involution": patch_class, "InvolutionReference": InvolutionReference}
    for prefix in ("Custom", "__main__", "keras_io", "involution_tf"):
        objects[f"{prefix}>Involution"] = patch_class
    return objects


def model_kind(path):
    """'savedmodel', 'h5' or 'keras' for a loadable path; ``ModelLoadError`` naming what is wrong otherwise."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            return "savedmodel"
        raise ModelLoadError(f"{path}: a directory that is not a SavedModel (no saved_model.pb)")
    if not os.path.exists(path):
        raise ModelLoadError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":
        raise ModelLoadError(f"{path}: already a TFLite model; benchmark it with invo-bench")
    if head.startswith(b"\x89HDF"):
        return "h5"
    if zipfile.is_zipfile(path):
        return "keras"
    raise ModelLoadError(f"{path}: not a Keras model (.h5, .keras) or SavedModel directory")


def _explain(path, exc):
    text = str(exc)
    found = re.search(r"Could not (?:locate|deserialize) class '([^']+)'", text) or re.search(r"Unknown layer: '?([\w>]+)", text)
    if found:
        return ModelLoadError(
            f"{path}: unknown layer class '{found.group(1)}': decorate it with "
            "@keras.saving.register_keras_serializable() in a .py file and pass --custom-module FILE.py"
        )
    if "truncated" in text or "Unable to" in text or "signature" in text.lower() or isinstance(exc, (OSError, zipfile.BadZipFile)):
        return ModelLoadError(f"{path}: corrupt or truncated model file ({' '.join(text.split())[:160]})")
    return ModelLoadError(f"{path}: cannot load the model ({type(exc).__name__}: {' '.join(text.split())[:200]})")


class SavedModelFunction:
    """A SavedModel's serving signature with the parts of the Keras model API the converter uses."""

    def __init__(self, path):
        import tensorflow as tf

        self.loaded = tf.saved_model.load(path)
        sigs = self.loaded.signatures
        if not sigs:
            raise ModelLoadError(f"{path}: the SavedModel has no serving signature")
        self.signature = sigs["serving_default"] if "serving_default" in sigs else next(iter(sigs.values()))
        specs = self.signature.structured_input_signature[1]
        if len(specs) != 1:
            raise ModelLoadError(f"{path}: only single-input SavedModels are supported, this one has {len(specs)}")
        (self.input_name, self.spec), = specs.items()
        self.output_name = sorted(self.signature.structured_outputs)[0]
        if None in tuple(self.spec.shape[1:]):
            raise ModelLoadError(f"{path}: the input shape {tuple(self.spec.shape)} must be known apart from the batch")

    @property
    def input_shape(self):
        return tuple(self.spec.shape[1:])

    def predict(self, x, verbose=0, batch_size=32):
        import numpy as np

        outs = [self.signature(**{self.input_name: x[i : i + batch_size]})[self.output_name].numpy()
                for i in range(0, len(x), batch_size)]
        return np.concatenate(outs)


def load_model(path, custom_modules=()):
    """(model, kind): a Keras model, or for a SavedModel directory a ``SavedModelFunction``."""
    for module in custom_modules:
        import_custom_module(module)
    kind = model_kind(path)
    if kind == "savedmodel":
        try:
            return SavedModelFunction(path), kind
        except ModelLoadError:
            raise
        except Exception as exc:
            raise _explain(path, exc) from None
    import keras

    error = None
    # The notebook's layer returns one tensor, the keras.io one (output, kernel): try both.
    for patch_class in (NotebookInvolution, KerasIoInvolution):
        try:
            model = keras.saving.load_model(path, custom_objects=_custom_objects(patch_class), compile=False)
            return model, kind
        except Exception as exc:  # noqa: BLE001 - explained below
            error = error or exc
    raise _explain(path, error) from None


__all__ = ["Involution", "ModelLoadError", "SavedModelFunction", "load_model", "import_custom_module"]
