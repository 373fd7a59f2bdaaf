"""Loads a Keras model from .h5, .keras or a SavedModel directory, with the involution classes supplied.

Models built with the extract_patches ``Involution`` of the involution-tf
notebook or the keras.io example load without the user's code: a compatible
class stands in for the name ``Involution``.
"""

import importlib.util
import os
import zipfile

from convert import compat
from convert.checks import ModelLoadError, model_kind  # noqa: F401 - re-exported: loading's errors and formats
from involution.layer import Involution
from involution.reference import InvolutionReference, KerasIoInvolution, NotebookInvolution, PatchInvolution
from involution.serializable import registered_classes


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
    objects = dict(registered_classes())  # the package's own classes, whichever module registers them
    objects.update({"Involution": patch_class, "InvolutionReference": InvolutionReference})
    for prefix in ("Custom", "__main__", "keras_io", "involution_tf"):
        objects[f"{prefix}>Involution"] = patch_class
    return objects


def _explain(path, exc):
    text = str(exc)
    unknown = compat.unknown_class(exc)
    if unknown:
        return ModelLoadError(
            f"{path}: unknown layer class '{unknown}': decorate it with "
            "@keras.saving.register_keras_serializable() in a .py file and pass --custom-module FILE.py"
        )
    if compat.file_is_corrupt(exc) or isinstance(exc, (OSError, zipfile.BadZipFile)):
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

    def __call__(self, x, training=False):
        """The signature's (first) output for one batch, as calling a Keras model gives it."""
        return self.signature(**{self.input_name: x})[self.output_name].numpy()

    def predict(self, x, verbose=0, batch_size=32):
        import numpy as np

        return np.concatenate([self(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


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
    # The user's own classes first when they were given (--custom-module); else the stand-ins: the notebook's
    # layer returns one tensor, the keras.io one (output, kernel), so try both.
    attempts = ([None] if custom_modules else []) + [NotebookInvolution, KerasIoInvolution]
    for patch_class in attempts:
        try:
            objects = registered_classes() if patch_class is None else _custom_objects(patch_class)
            model = keras.saving.load_model(path, custom_objects=objects, compile=False)
            return model, kind
        except Exception as exc:  # noqa: BLE001 - explained below
            error = error or exc
    if compat.weights_did_not_fit(error):
        # The architecture loads but the weights do not: a user's involution class that names or nests
        # its kernel generator otherwise.  Match its saved arrays by role and shape instead.
        for patch_class in (NotebookInvolution, KerasIoInvolution):
            try:
                return _load_by_structure(path, kind, patch_class), kind
            except StructureError:
                raise
            except Exception:  # noqa: BLE001 - the other stand-in, or the first error below
                continue
    raise _explain(path, error) from None


class StructureError(ModelLoadError):
    """An involution layer whose saved arrays cannot be matched by role and shape."""


def _load_by_structure(path, kind, patch_class):
    """The model from its saved config, other layers' weights as Keras saves them, and each involution
    layer's kernel generator from its saved arrays matched by role and shape (reduce conv [1,1,C,C/r],
    BatchNorm 4 x [C/r], span conv [1,1,C/r,K*K*G]), whatever the attribute names and nesting."""
    import json
    import tempfile
    import warnings

    import h5py
    import keras

    objects = _custom_objects(patch_class)
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "keras":
            with zipfile.ZipFile(path) as z:
                config = json.loads(z.read("config.json"))
                weights = os.path.join(tmp, "model.weights.h5")
                with open(weights, "wb") as f:
                    f.write(z.read("model.weights.h5"))
            model = keras.saving.deserialize_keras_object(config, custom_objects=objects)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the stand-ins' sub-layers are expected to mismatch
                model.load_weights(weights, skip_mismatch=True)
            groups = _keras_groups(weights, model)
        else:
            with h5py.File(path, "r") as f:
                config = f.attrs["model_config"]
            model = compat.model_from_h5_config(json.loads(config), objects)
            groups = _h5_groups(path, model)
    for layer in model.layers:
        if isinstance(layer, patch_class):
            _set_by_role(layer, groups.get(layer.name, []))
    return model


def _keras_groups(weights, model):
    """{involution layer name: [[arrays of one sub-layer], ...]} from a .keras weights file; other layers'
    paths follow Keras's naming of a list of layers (snake-case class name, numbered)."""
    import h5py

    used, out = {}, {}
    with h5py.File(weights, "r") as f:
        for layer in model.layers:
            base = compat.weights_path_name(layer)
            n = used.get(base, 0)
            used[base] = n + 1
            key = f"layers/{base}" + (f"_{n}" if n else "")
            if isinstance(layer, PatchInvolution) and key in f:
                found = []
                f[key].visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Group) and name.endswith("vars") else None)
                out[layer.name] = [[f[key][g][v][()] for v in sorted(f[key][g], key=int)] for g in sorted(found)
                                   if len(f[key][g])]
    return out


def _h5_groups(path, model):
    """The same from a legacy .h5: each layer's weight names, grouped by the sub-layer they belong to."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"]
        for layer in model.layers:
            if layer.name not in root:
                continue
            names = [n.decode() if isinstance(n, bytes) else n for n in root[layer.name].attrs.get("weight_names", [])]
            arrays = [root[layer.name][n][()] for n in names]
            if not isinstance(layer, PatchInvolution):
                if arrays:
                    layer.set_weights(arrays)
                continue
            grouped = {}
            for n, a in zip(names, arrays):
                grouped.setdefault(n.rsplit("/", 1)[0], []).append((n.rsplit("/", 1)[1], a))
            order = {"gamma": 0, "beta": 1, "moving_mean": 2, "moving_variance": 3}
            out[layer.name] = [[a for _, a in sorted(g, key=lambda t: order.get(t[0], 0))] if len(g) == 4 else [a for _, a in g]
                               for g in grouped.values()]
    return out


def _set_by_role(layer, groups):
    """Assigns reduce conv, BatchNorm and span conv of a stand-in from sub-layer array groups."""
    import numpy as np

    c, mid = layer.channel, layer.channel // layer.reduction_ratio
    span = layer.kernel_size**2 * layer.group_number
    roles = {}
    for arrays in groups:
        if len(arrays) == 4 and all(a.shape == (mid,) for a in arrays):
            role = "bn"
        elif arrays and arrays[0].ndim == 4 and arrays[0].shape[:2] == (1, 1) and len(arrays) <= 2:
            role = {(c, mid): "reduce", (mid, span): "span"}.get(arrays[0].shape[2:])
            if (c, mid) == (mid, span):
                role = None
        else:
            role = None
        if role is None or role in roles:
            raise StructureError(
                f"layer {layer.name}: its saved arrays ({', '.join(str(tuple(a.shape)) for a in arrays)}) cannot be "
                "matched to reduce conv, BatchNorm and span conv by shape; pass --custom-module with its class")
        roles[role] = arrays
    missing = {"reduce", "bn", "span"} - set(roles)
    if missing:
        raise StructureError(f"layer {layer.name}: no saved {', '.join(sorted(missing))} weights found; pass "
                             "--custom-module with its class")
    reduce, bn, _, span_conv = layer.kernel_gen.layers
    for conv, arrays in ((reduce, roles["reduce"]), (span_conv, roles["span"])):
        bias = arrays[1] if len(arrays) == 2 else np.zeros(arrays[0].shape[-1], np.float32)
        conv.set_weights([arrays[0], bias])
    bn.set_weights(roles["bn"])


__all__ = ["Involution", "ModelLoadError", "SavedModelFunction", "load_model", "import_custom_module"]
