"""Training: the seed's recipe (Adam, sparse CE from logits, batch 256, inputs in [0, 1]).

``train`` writes everything into a temporary sibling of ``out`` and renames it
at the end, so a failed run never leaves a half-written output directory.
"""

import contextlib
import dataclasses
import io
import json
import os
import shutil
import sys
import tempfile
import warnings

import numpy as np

from invo_base.options import Options
from involution.catalog import DISTRIBUTE, check_train_options
from involution.data import SPLIT_SEED, load_dataset
from involution.layer import Involution
from involution.models import build_model


class TrainError(ValueError):
    """A training request that cannot run; one line for the user."""


def _distribute_strategy(name):
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise TrainError(f"unknown --strategy {name!r}; choose one of: {', '.join(DISTRIBUTE)}")


def is_chief():
    """True unless TF_CONFIG names this process a worker other than the chief (worker 0 when none is named)."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        raise TrainError("TF_CONFIG is not valid JSON") from None
    task = config.get("task") or {}
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind in (None, "chief"):
        return True
    return kind == "worker" and index == 0 and "chief" not in (config.get("cluster") or {})


def _summary(model):
    lines = [f"{model.name}: {model.count_params():,} parameters "
             f"({sum(int(np.prod(w.shape)) for w in model.trainable_weights):,} trainable, "
             f"{sum(int(np.prod(w.shape)) for w in model.non_trainable_weights):,} non-trainable)", ""]
    lines.append(f"{'layer':<28}{'type':<22}{'output shape':<24}{'params':>10}")
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        shape = str(tuple(shape.shape)) if shape is not None and hasattr(shape, "shape") else "?"
        lines.append(f"{layer.name:<28}{type(layer).__name__:<22}{shape:<24}{layer.count_params():>10,}")
    return "\n".join(lines) + "\n"


def fit(model_name, data, epochs, batch_size, learning_rate, seed, distribute="default", verbose=0):
    """Builds ``model_name`` for ``data`` and trains it; returns (model, history dict)."""
    import keras

    keras.utils.set_random_seed(seed)
    strategy = _distribute_strategy(distribute)
    with strategy.scope():
        model = build_model(model_name, input_shape=data.input_shape, num_classes=data.num_classes)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    if distribute == "multi-worker":
        return model, _fit_multi_worker(model, strategy, data, epochs, batch_size, seed, verbose)
    hist = model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs,
                     validation_data=(data.x_val, data.y_val), shuffle=True, verbose=verbose)
    return model, {k: [float(v) for v in vals] for k, vals in hist.history.items()}


def _fit_multi_worker(model, strategy, data, epochs, batch_size, seed, verbose):
    """The training loop for MultiWorkerMirroredStrategy, which Keras 3's ``fit`` does not run
    (keras-team/keras#20585): each step on every worker's shard of the global batch, gradients
    all-reduced by the strategy; validation on the whole validation part, as ``fit`` reports it."""
    import tensorflow as tf

    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    ds = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
    ds = ds.shuffle(len(data.x_train), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    batches = strategy.experimental_distribute_dataset(ds)
    optimizer = model.optimizer

    @tf.function
    def step(x, y):
        def replica(x, y):
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                per_sample = loss_fn(y, logits)
                loss = tf.nn.compute_average_loss(per_sample, global_batch_size=batch_size)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            hits = tf.cast(tf.equal(tf.argmax(logits, -1), tf.cast(y, tf.int64)), tf.float32)
            return tf.reduce_sum(per_sample), tf.reduce_sum(hits), tf.cast(tf.size(y), tf.float32)

        return [strategy.reduce("SUM", v, axis=None) for v in strategy.run(replica, args=(x, y))]

    hist = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    for epoch in range(epochs):
        total = np.zeros(3)
        for x, y in batches:
            total += [float(v) for v in step(x, y)]
        logits = model.predict(data.x_val, verbose=0, batch_size=256)
        val_loss = float(np.mean(loss_fn(data.y_val, logits)))
        val_acc = float(np.mean(np.argmax(logits, -1) == data.y_val))
        for key, value in zip(hist, (total[0] / total[2], total[1] / total[2], val_loss, val_acc)):
            hist[key].append(float(value))
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs} - loss: {hist['loss'][-1]:.4f} - accuracy: {hist['accuracy'][-1]:.4f}"
                  f" - val_loss: {val_loss:.4f} - val_accuracy: {val_acc:.4f}", flush=True)
    return hist


@dataclasses.dataclass(frozen=True)
class TrainOptions(Options):
    """How a model is trained (invo-train's flags); the defaults are invo-train's."""

    error, what = TrainError, "training option"

    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 1e-3
    seed: int = 1
    distribute: str = "default"   # default, mirrored or multi-worker (invo-train --strategy)
    data_dir: str = None          # a local cifar-10-batches-py
    input_shape: tuple = None     # the model's input; None: 32x32x3


def train(model="seed-involution", dataset="digits", options=None, *, out="runs/train", compare=False, force=False,
          quiet=False, **fields):
    """Trains one model (or, with ``compare``, seed-conv and ``model`` on the same data).

    ``options``: a ``TrainOptions`` (epochs, batch size, learning rate, seed, distribution, data); ``fields``
    replace its fields by name.

    Writes ``model.h5``, ``model.keras``, ``history.json``, ``summary.txt``, ``loss.png``,
    ``accuracy.png`` and ``kernels.png`` (involution models) into ``out``; with ``compare``,
    each model goes into a sub-directory and the curves are drawn together.
    Returns a dict of final metrics per model.
    """
    import tensorflow as tf

    from involution import plots

    o = TrainOptions.of(options, **fields)
    epochs, seed, distribute = o.epochs, o.seed, o.distribute
    try:
        check_train_options(model, distribute, epochs, o.batch_size, o.learning_rate)
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    out = os.path.abspath(out)
    # Multi-worker: every worker trains (and saves, as the strategy needs), only the chief keeps the outputs.
    chief = distribute != "multi-worker" or is_chief()
    data = load_dataset(dataset, o.input_shape or (32, 32, 3), data_dir=o.data_dir)  # the input before the output
    if chief and os.path.exists(out) and os.listdir(out) and not force:
        raise TrainError(f"{out} exists and is not empty; pass --force to replace it")

    if data.y_train.max() >= data.num_classes or data.y_val.max() >= data.num_classes:
        raise TrainError(f"labels out of range for {data.num_classes} classes")
    tf.config.experimental.enable_op_determinism()

    names = ["seed-conv", model] if compare and model != "seed-conv" else [model]
    parent = os.path.dirname(out)
    if chief:
        os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".train-", dir=parent if chief else None)
    try:
        results, histories = {}, {}
        for i, name in enumerate(names):
            sub = os.path.join(tmp, name) if len(names) > 1 else tmp
            os.makedirs(sub, exist_ok=True)
            if not quiet:
                print(f"... training {name} ({i + 1}/{len(names)}) on {data.name}: {len(data.x_train):,} samples, "
                      f"{len(data.x_val):,} held out, {epochs} epochs", file=sys.stderr, flush=True)
            net, hist = fit(name, data, epochs, o.batch_size, o.learning_rate, seed, distribute, 0 if quiet else 2)
            net.save(os.path.join(sub, "model.keras"))
            with contextlib.redirect_stderr(io.StringIO()):
                net.save(os.path.join(sub, "model.h5"))
            with open(os.path.join(sub, "history.json"), "w") as f:
                json.dump(hist, f, indent=2)
            with open(os.path.join(sub, "summary.txt"), "w") as f:
                f.write(_summary(net))
            label = f"{name} ({net.count_params():,} params)"
            histories[label] = hist
            plots.plot_histories({label: hist}, os.path.join(sub, ""))
            if any(isinstance(layer, Involution) for layer in net.layers):
                plots.plot_kernel_maps(net, data.x_val[:4], os.path.join(sub, "kernels.png"))
            if epochs >= 3 and hist["loss"][-1] > 0.98 * hist["loss"][0] and hist["val_accuracy"][-1] < 1.5 / data.num_classes:
                warnings.warn(f"{name} did not learn (loss {hist['loss'][0]:.3f} -> {hist['loss'][-1]:.3f}); "
                              "a dead ReLU at initialisation can do this: try another --seed or more --epochs")
            results[name] = {
                "params": int(net.count_params()),
                "loss": hist["loss"][-1],
                "accuracy": hist["accuracy"][-1],
                "val_loss": hist["val_loss"][-1],
                "val_accuracy": hist["val_accuracy"][-1],
                "dir": os.path.join(out, name) if len(names) > 1 else out,
            }
        if len(names) > 1:
            plots.plot_histories(histories, os.path.join(tmp, ""))
        with open(os.path.join(tmp, "results.json"), "w") as f:
            json.dump({"dataset": data.name, "epochs": epochs, "seed": seed, "models": results,
                       "split": {"rule": "involution.data.split_indices" if dataset != "cifar10" else "CIFAR-10 test batch",
                                 "split_seed": SPLIT_SEED, "train": len(data.x_train), "validation": len(data.x_val)}},
                      f, indent=2)
        if not chief:
            shutil.rmtree(tmp)
            return results
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return results
