"""Accuracy of a float Keras model against its .tflite (int8) conversion on held-out data."""

from convert.load import load_model
from convert.verification import held_out, verify
from invo_base.tflite_model import TFLiteModel


def compare_accuracy(keras_path, tflite_path, source, *, samples=500, data_dir=None, custom_modules=()):
    """{samples, top1_keras, top1_tflite, top1_agreement, max_rel_error, ...}; labels are required."""
    model, kind = load_model(keras_path, custom_modules)
    TFLiteModel.from_file(tflite_path)  # a clear error for a missing or corrupt .tflite
    shape = model.input_shape if kind == "savedmodel" else tuple(model.inputs[0].shape[1:])
    x, y = held_out(source, shape, data_dir)
    if y is None:
        raise ValueError(f"{source}: accuracy needs labels (a dataset, an image folder, or a .npz with y)")
    result = verify(model, tflite_path, x[:samples], y[:samples])
    result["top1_drop_points"] = 100 * (result["top1_keras"] - result["top1_tflite"])
    return result
