"""Every private Keras / TensorFlow internal the project relies on, and nothing else.

Each function names one internal, says why no public API does the job, and has a test of its own in
``tests/test_compat.py`` that runs it against the installed Keras and TensorFlow, so that an upgrade that
moves or changes an internal fails there, by name, rather than somewhere inside a conversion.
"""

import contextlib
import re

# --- TFLiteConverter ---------------------------------------------------------------------------------------


def allow_fp16_accumulation(conv):
    """Marks a float16 conversion as safe to run in FP16 arithmetic: the converter then writes the
    ``reduced_precision_support`` metadata (fp16accfp16), XNNPACK's hint to run FP16 on CPUs with native FP16.

    Internal: ``target_spec._experimental_supported_accumulation_type``; XNNPACK's README names it, and
    TensorFlow has no public switch for that metadata.
    """
    import tensorflow as tf

    conv.target_spec._experimental_supported_accumulation_type = tf.float16  # noqa: SLF001


def per_tensor_dense(conv):
    """Dynamic range: Dense layers' weights quantized per tensor, as TF wrote them before 2.17.  Per channel (the
    default since) makes FULLY_CONNECTED version 12, which runtimes before TF 2.17 (tflite-runtime 2.14, its last
    release) cannot load; per tensor is version 9, loaded since TF 2.3.

    Internal: ``_experimental_disable_per_channel_quantization_for_dense_layers``; no public switch.
    """
    conv._experimental_disable_per_channel_quantization_for_dense_layers = True  # noqa: SLF001


def calibrated_only(conv):
    """The converter's calibrated but unquantized model (float ops carrying their measured ranges).

    Internal: ``_experimental_calibrate_only``, as TF's own ``QuantizationDebugger`` sets it; selective
    quantization needs the calibrated model to quantize it with a denylist.
    """
    conv._experimental_calibrate_only = True  # noqa: SLF001
    return conv


@contextlib.contextmanager
def calibration_replaced(calibrate):
    """While active, the converter's post-training calibration is ``calibrate(model_content, samples)``: the float
    model the converter made (bytes) and an iterator over the representative dataset's samples, returning the
    model with each tensor's range; or None to leave that model to TF's calibrator.

    Internal: ``tensorflow.lite.python.optimize.calibrator.Calibrator.calibrate`` and its ``_model_content``;
    the converter calls it on its own float model and offers no hook (``convert.calibration`` says why).
    """
    from tensorflow.lite.python.optimize import calibrator

    original = calibrator.Calibrator.calibrate

    def replaced(self, dataset_gen):
        flat = calibrate(self._model_content, dataset_gen())  # noqa: SLF001
        return original(self, dataset_gen) if flat is None else flat

    calibrator.Calibrator.calibrate = replaced
    try:
        yield
    finally:
        calibrator.Calibrator.calibrate = original


def quantize_calibrated(conv, calibrated, io_dtype, denylisted_nodes=None, denylisted_ops=None):
    """Quantizes a calibrated model to int8 except the denylisted nodes / op types, with ``io_dtype`` ends.

    Internal: ``tensorflow.lite.python.convert.mlir_quantize`` and ``conv._experimental_disable_per_channel``,
    called as the converter itself calls them; the public ``QuantizationDebugger`` leaves float32 ends only.
    """
    from tensorflow.lite.python import convert as tf_convert

    return tf_convert.mlir_quantize(
        calibrated, disable_per_channel=conv._experimental_disable_per_channel,  # noqa: SLF001
        input_data_type=io_dtype, output_data_type=io_dtype,
        denylisted_nodes=denylisted_nodes or None, denylisted_ops=denylisted_ops or None)


def flex_ops_named(text):
    """The TensorFlow ops a converter error says are no TFLite builtins ([] when it says none).

    Internal: the text of ``ConverterError`` (its error codes are not exposed for this case).
    """
    ops = sorted(set(re.findall(r"\btf\.([A-Z]\w*)", text)))  # TF op names are CamelCase (not tf.entry_function)
    return ops or (["?"] if "SELECT_TF_OPS" in text or "Flex" in text else [])


# --- Keras models ------------------------------------------------------------------------------------------


def all_layers(model):
    """Every layer of a Keras model, nested models' and layers' sublayers included, each once.

    Internal: ``Layer._flatten_layers`` (Keras 3 has no public recursive listing; ``model.layers`` is one level).
    """
    return list(model._flatten_layers())  # noqa: SLF001


def model_from_h5_config(config, custom_objects):
    """The model of a legacy .h5 file's ``model_config`` attribute (parsed JSON), built without weights.

    Internal: ``keras.src.legacy.saving.saving_utils.model_from_config``, which ``keras.saving.load_model``
    uses for .h5 itself; the public ``model_from_json`` does not accept the legacy config of every layer.
    """
    from keras.src.legacy.saving import saving_utils

    return saving_utils.model_from_config(config, custom_objects=custom_objects)


def weights_path_name(layer):
    """The base name a .keras weights file stores a top-level layer under (``layers/<name>[_<n>]``).

    Internal: ``keras.src.utils.naming.to_snake_case`` of the class name, how Keras's saving names it.
    """
    from keras.src.utils.naming import to_snake_case

    return to_snake_case(type(layer).__name__)


# The messages of Keras's loading errors, as Keras 3 words them (``tests/test_compat.py`` provokes each).
_UNKNOWN_CLASS = (re.compile(r"Could not (?:locate|deserialize) class '([^']+)'"), re.compile(r"Unknown layer: '?([\w>]+)"))
_WEIGHTS_MISMATCH = ("could not be loaded", "mismatch", "expected")
_CORRUPT = ("truncated", "Unable to", "signature")


def unknown_class(exc):
    """The class name a Keras loading error says it cannot find, or None.  Internal: the message text."""
    for pattern in _UNKNOWN_CLASS:
        found = pattern.search(str(exc))
        if found:
            return found.group(1)
    return None


def weights_did_not_fit(exc):
    """Whether a Keras loading error says the architecture loaded but its saved weights did not fit."""
    text = str(exc)
    return any(n in text if n != "mismatch" else n in text.lower() for n in _WEIGHTS_MISMATCH)


def file_is_corrupt(exc):
    """Whether a Keras / h5py loading error says the file itself is damaged."""
    text = str(exc)
    return any(n in text if n != "signature" else n in text.lower() for n in _CORRUPT)


# --- TensorFlow functions ----------------------------------------------------------------------------------


@contextlib.contextmanager
def replaced_extract_patches(replacement):
    """Within the block ``tf.image.extract_patches`` is ``replacement(original, *args, **kwargs)``.

    Internal in effect: a user's layer class calls the module attribute, and rebinding it is the only way to
    lower that call without the user's code; restored on exit, even on error.
    """
    import tensorflow as tf

    original = tf.image.extract_patches

    def patched(*args, **kwargs):
        return replacement(original, *args, **kwargs)

    tf.image.extract_patches = patched
    try:
        yield
    finally:
        tf.image.extract_patches = original
