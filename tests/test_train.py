"""invo-train: a short real training run, its outputs, reproducibility and bad input."""

import json
import os

import keras
import numpy as np
import pytest
from conftest import assert_one_line_error, invoke_cli, run_cli
from PIL import Image

from involution import Involution
from involution.data import load_digits
from involution.cli import main as train_cli
from involution.train import fit


def test_training_writes_everything_and_learns(trained_seed):
    """Trained with --seed 1: the validation part is still the one fixed split, and the saved models are
    the trained ones (their accuracy on it is the reported one)."""
    from involution.data import load_dataset

    out, results = trained_seed
    data = load_dataset("digits", (32, 32, 3))
    saved = json.loads((out / "results.json").read_text())
    assert saved["seed"] == 1 and saved["split"]["split_seed"] == 0
    assert (saved["split"]["train"], saved["split"]["validation"]) == (len(data.x_train), len(data.x_val))
    for name in ("seed-conv", "seed-involution"):
        d = out / name
        hist = json.loads((d / "history.json").read_text())
        assert len(hist["loss"]) == 12 and hist["loss"][-1] < 0.8 * hist["loss"][0], hist["loss"]
        model = keras.models.load_model(d / "model.keras")
        accuracy = float(np.mean(model.predict(data.x_val, verbose=0).argmax(1) == data.y_val))
        assert accuracy == pytest.approx(results[name]["val_accuracy"], abs=1e-6) and accuracy > 0.3
        assert accuracy == pytest.approx(hist["val_accuracy"][-1], abs=1e-6)
        h5 = keras.models.load_model(d / "model.h5", custom_objects={"Involution": Involution}, compile=False)
        np.testing.assert_allclose(h5.predict(data.x_val[:8], verbose=0), model.predict(data.x_val[:8], verbose=0),
                                   rtol=1e-5, atol=1e-5)
        assert f"{results[name]['params']:,}" in (d / "summary.txt").read_text()
        for png in ("loss.png", "accuracy.png"):
            with Image.open(d / png) as img:
                img.verify()
    assert results["seed-involution"]["params"] == 13_080 and results["seed-conv"]["params"] == 319_178
    for png in ("loss.png", "accuracy.png", "seed-involution/kernels.png"):
        with Image.open(out / png) as img:
            img.verify()
            assert img.format == "PNG"
    assert "13,080 parameters" in (out / "seed-involution" / "summary.txt").read_text()


@pytest.mark.parametrize("fmt", ["h5", "keras"])
def test_saved_models_load_back_with_the_builtin_layer(trained_seed, fmt):
    out, _ = trained_seed
    model = keras.saving.load_model(out / "seed-involution" / f"model.{fmt}")
    assert sum(isinstance(layer, Involution) for layer in model.layers) == 3
    other = keras.saving.load_model(out / "seed-involution" / ("model.keras" if fmt == "h5" else "model.h5"))
    x = load_digits().x_val[:16]
    np.testing.assert_allclose(model.predict(x, verbose=0), other.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_same_seed_same_weights_and_metrics():
    data = load_digits()
    runs = [fit("seed-involution", data, 1, 128, 1e-3, seed=5) for _ in range(2)]
    for a, b in zip(runs[0][0].weights, runs[1][0].weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert runs[0][1] == runs[1][1]


@pytest.mark.parametrize("args,needle", [
    (["--model", "vgg"], "seed-involution"),
    (["--dataset", "imagenet"], "digits"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "no such CIFAR-10 directory"),
    (["--epochs", "0"], "--epochs"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, needle):
    out = tmp_path / "out"
    proc = run_cli("involution.cli", "--out", str(out), "--epochs", "1", *args)
    assert_one_line_error(proc, needle)
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".train-")]


def test_bad_data_files(tmp_path):
    np.savez(tmp_path / "neg.npz", x=np.zeros((6, 32, 32, 3), np.float32), y=np.array([0, 1, 2, -3, 1, 0]))
    np.savez(tmp_path / "rank.npz", x=np.zeros((6, 32), np.float32), y=np.zeros(6, int))
    for name, needle in (("neg.npz", "out of range"), ("rank.npz", "N x H x W x C")):
        proc = invoke_cli(train_cli, "--dataset", tmp_path / name, "--out", tmp_path / "o", "--epochs", "1")
        assert_one_line_error(proc, needle)
    assert not (tmp_path / "o").exists()


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multi_worker_training_runs_and_only_the_chief_writes(tmp_path):
    """Two invo-train workers on localhost with TF_CONFIG: one epoch each, both finish, worker 0 (the chief)
    alone writes its outputs, and the saved model loads and computes what its results say (models invo-train
    saves are converted in test_convert)."""
    import subprocess
    import sys

    from conftest import ROOT

    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "involution.cli", "--model", "seed-involution", "--epochs", "1", "--batch-size", "64",
             "--strategy", "multi-worker", "--out", str(tmp_path / f"worker{i}"), "--quiet"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=420) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    assert (tmp_path / "worker0" / "model.keras").exists() and (tmp_path / "worker0" / "results.json").exists()
    assert not (tmp_path / "worker1").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".train-")]
    import keras

    from involution.data import load_dataset

    model = keras.saving.load_model(str(tmp_path / "worker0" / "model.keras"))
    results = json.loads((tmp_path / "worker0" / "results.json").read_text())
    d = load_dataset("digits")
    _, acc = model.evaluate(d.x_val, d.y_val, verbose=0)[:2]
    assert acc == pytest.approx(results["models"]["seed-involution"]["val_accuracy"], abs=1e-6), results


@pytest.mark.parametrize("config,chief", [
    (None, True),                                                                      # single process
    ({"task": {"type": "chief", "index": 0}, "cluster": {"chief": ["a"], "worker": ["b"]}}, True),
    ({"task": {"type": "worker", "index": 0}, "cluster": {"chief": ["a"], "worker": ["b"]}}, False),  # explicit chief
    ({"task": {"type": "worker", "index": 0}, "cluster": {"worker": ["a", "b"]}}, True),  # worker 0 leads
    ({"task": {"type": "worker", "index": 1}, "cluster": {"worker": ["a", "b"]}}, False),
])
def test_only_the_chief_writes(monkeypatch, config, chief):
    from involution.train import is_chief

    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert is_chief() is chief
