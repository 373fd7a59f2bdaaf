"""The README's commands, run as written: each command line of its shell blocks runs here in a fresh process
(the installed console scripts, a workspace holding the files it names), or is named below with the reason it
cannot run here.  A command the README adds or changes fails ``test_every_readme_command_is_accounted_for``
until this table says how to run it."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, assert_gpu_ok, made_once, run_cli, user_env, write_cifar

BIN = os.path.dirname(sys.executable)

# Flags appended to a command: only the size of its inputs (epochs, timing runs) changes.
SMALL_TRAINING = "--epochs 1"
SMALL_TIMING = "--num_runs 5 --warmup_runs 1"

RUN, SKIP = "run", "skip"
COMMANDS = {
    "bash scripts/main.sh": (SKIP, "the main job (minutes of training and timing): it trains, converts, "
                                   "benchmarks and reports with the tools whose commands run below"),
    "bash scripts/test.sh": (SKIP, "this suite"),
    "python3 -m venv ~/invo && . ~/invo/bin/activate": (SKIP, "a board's set-up: scripts/setup.sh builds "
                                                              ".venv-legacy the same way, and tests/test_bench.py "
                                                              "runs invo-bench there"),
    "pip install '.[litert]'": (SKIP, "a board's set-up (PyPI); scripts/setup.sh installs the same packages"),
    "pip install '.[legacy]'": (SKIP, "a board's set-up (PyPI); scripts/setup.sh builds .venv-legacy from these"),
    "invo-bench model.tflite --num_threads 4": (RUN, SMALL_TIMING),
    "invo-bench model.tflite --check_gpu --use_gpu": (RUN, SMALL_TIMING),
    "invo-convert model.keras --target gpu": (RUN, ""),
    "invo-convert runs/demo/train/seed-involution/model.keras --quantize int8 --calib digits --c-array -o "
    "seed-involution-mcu.tflite": (RUN, ""),
    "invo-bench runs/demo/seed-conv-int8.tflite runs/demo/seed-involution-int8.tflite --runtime tflite-micro":
        (RUN, "--num_runs 5"),
    "invo-train --model seed-involution --compare --epochs 30 --out runs/demo/train": (RUN, SMALL_TRAINING),
    "invo-train --model rednet-cifar --dataset cifar10 --data-dir ~/data/cifar-10-batches-py --out runs/rednet":
        (RUN, SMALL_TRAINING),  # a CIFAR-10 directory of 36 images in the original format
    "TF_CONFIG='{\"cluster\": {\"worker\": [\"host1:2222\", \"host2:2222\"]}, \"task\": {\"type\": \"worker\", "
    "\"index\": 0}}' invo-train --strategy multi-worker --out runs/mw":
        (SKIP, "a cluster of two hosts; tests/test_train.py runs two workers on this machine"),
    "invo-convert runs/demo/train/seed-involution/model.keras --quantize int8 --calib digits --report runs/audit.json":
        (RUN, ""),
    "invo-convert notebook_model.h5": (RUN, ""),
    "invo-convert my_involution_model.keras": (RUN, ""),
    "invo-convert saved_model_dir/ --quantize int8 --calib images/": (RUN, ""),
    "invo-convert model.keras --quantize dynamic --legacy-runtime": (RUN, ""),
    "invo-convert runs/demo/train/seed-involution/model.keras --quantize int8 --calib digits --float-aggregation "
    "-o seed-involution-fagg.tflite": (RUN, ""),
    "invo-quantize debug runs/demo/train/seed-involution/model.keras --calib digits": (RUN, ""),
    "invo-quantize selective runs/demo/train/seed-involution/model.keras -o sel.tflite --calib digits --keep-op MUL":
        (RUN, ""),
    "invo-quantize evaluate runs/demo/train/seed-involution/model.keras runs/demo/seed-involution-int8.tflite "
    "--data digits": (RUN, ""),
    "invo-bench runs/demo/seed-involution-int8.tflite runs/demo/seed-conv-int8.tflite --num_threads 2 --json "
    "runs/bench.json": (RUN, SMALL_TIMING),
    "invo-bench model.tflite --use_gpu --check_gpu": (RUN, SMALL_TIMING),
    "invo-bench model.tflite --use_gpu --gpu_precision_loss_allowed false": (RUN, SMALL_TIMING),
    "invo-bench model.tflite --runtime tflite-runtime --use_gpu --delegate /vendor/lib64/libgpu_delegate.so":
        (SKIP, "a phone's vendor GPU delegate; tests/test_bench.py runs --runtime tflite-runtime in the legacy venv"),
    "invo-report deployment --train-dir runs/demo/train --out runs/demo/report": (RUN, "--num-runs 5 --rounds 2"),
    "invo-report networks --networks rednet26,rednet50,resnet50 --out runs/network_bench":
        (SKIP, "three 224x224 networks in four precisions, timed on 1, 2 and all threads: an hour-long benchmark; "
               "tests/test_pretrained.py runs invo-report networks on a RedNet-26 at 64x64"),
    "invo-report layers --out runs/layer_bench":
        (SKIP, "every RedNet layer shape timed 100 times in two forms: a benchmark of minutes; "
               "tests/test_layer_bench.py runs the same report on small layers"),
}


def readme_commands(path=os.path.join(ROOT, "README.md")):
    """Every command line of the README's ```bash blocks: continuation lines joined, comments dropped."""
    commands, block, pending = [], False, ""
    for line in open(path).read().splitlines():
        if line.startswith("```"):
            block = line.strip() == "```bash"
            continue
        if not block:
            continue
        text = pending + re.sub(r"\s+#\s.*$", "", line).strip()
        if text.endswith("\\"):
            pending = text[:-1].rstrip() + " "
            continue
        pending = ""
        if text and not text.startswith("#"):
            commands.append(" ".join(text.split()))
    return commands


def test_every_readme_command_is_accounted_for():
    found = readme_commands()
    assert set(found) == set(COMMANDS), {"not in this table": sorted(set(found) - set(COMMANDS)),
                                         "no longer in the README": sorted(set(COMMANDS) - set(found))}


def _write_images(root, per_class=4):
    from PIL import Image

    from involution.data import load_dataset

    ds = load_dataset("digits")
    for label in range(3):
        (root / str(label)).mkdir(parents=True)
        for i, img in enumerate(ds.x_val[ds.y_val == label][:per_class]):
            Image.fromarray((img * 255).round().astype(np.uint8)).save(root / str(label) / f"{i}.png")


@pytest.fixture(scope="module")
def workspace(request, tmp_path_factory, trained_seed, seed_files):
    """A folder holding what the README's commands name: the main job's runs/demo (invo-train's output and its
    int8 files), a notebook and a user's own involution model, a SavedModel, an image folder, model.keras and
    model.tflite / model_fp16.tflite, and ~/data/cifar-10-batches-py."""
    def make(out):
        import keras

        tmp = out.with_name("partial")
        shutil.rmtree(tmp, ignore_errors=True)
        train_dir, _ = trained_seed
        shutil.copytree(train_dir, tmp / "runs" / "demo" / "train")
        for src, target in (("inv_int8", "runs/demo/seed-involution-int8.tflite"),  # the main job's int8 files
                            ("conv_int8", "runs/demo/seed-conv-int8.tflite"), ("inv_f32", "model.tflite"),
                            ("inv_fp16", "model_fp16.tflite")):
            shutil.copy(seed_files / f"{src}.tflite", tmp / target)
        seed = tmp / "runs" / "demo" / "train" / "seed-involution" / "model.keras"
        shutil.copy(seed, tmp / "model.keras")
        keras.saving.load_model(seed).export(str(tmp / "saved_model_dir"), verbose=False)
        _write_images(tmp / "images")
        write_cifar(tmp / "data" / "cifar-10-batches-py")
        # Models whose classes this process never imports, each saved by a process of its own.
        for module, path, name, target in (("save_models", "tests/legacy_layers", "kerasio.h5", "notebook_model.h5"),
                                           ("save_user_models", "tests/user_layers", "NotebookStyle.keras",
                                            "my_involution_model.keras")):
            extra = ["NotebookStyle"] if module == "save_user_models" else []
            proc = run_cli(module, str(tmp), *extra, env={"PYTHONPATH": os.path.join(ROOT, path)})
            assert proc.returncode == 0, proc.stderr[-2000:]
            os.rename(tmp / name, tmp / target)
        tmp.rename(out)
    return made_once(request, tmp_path_factory, "readme_workspace", make)


def run_readme_command(command, extra, cwd):
    """The command through bash, as a user's shell runs it: the venv's console scripts first on PATH, ~ the
    workspace, no PYTHONPATH into the repository."""
    env = user_env(PATH=BIN + os.pathsep + os.environ["PATH"], HOME=str(cwd))
    return subprocess.run(["bash", "-c", f"{command} {extra}".strip()], capture_output=True, text=True, cwd=str(cwd),
                          env=env, timeout=600)


# What each command must leave behind, beyond exit 0 (paths in the workspace).
OUTPUTS = {
    "invo-train --model seed-involution": ["runs/demo/train/seed-involution/model.keras",
                                           "runs/demo/train/seed-conv/model.keras", "runs/demo/train/results.json"],
    "invo-train --model rednet-cifar": ["runs/rednet/model.keras", "runs/rednet/model.h5"],
    "invo-convert runs/demo/train/seed-involution/model.keras --quantize int8 --calib digits --report":
        ["runs/audit.json", "runs/demo/train/seed-involution/model.tflite"],
    "invo-convert notebook_model.h5": ["notebook_model.tflite"],
    "invo-convert my_involution_model.keras": ["my_involution_model.tflite"],
    "invo-convert saved_model_dir/": ["saved_model_dir.tflite"],
    "invo-convert model.keras": ["model.tflite"],
    "invo-convert runs/demo/train/seed-involution/model.keras --quantize int8 --calib digits --float-aggregation":
        ["seed-involution-fagg.tflite"],
    "invo-quantize selective": ["sel.tflite"],
    "invo-convert runs/demo/train/seed-involution/model.keras --quantize int8 --calib digits --c-array":
        ["seed-involution-mcu.tflite", "seed_involution_mcu.h", "seed_involution_mcu.cc", "seed_involution_mcu_ops.h"],
    "invo-bench runs/demo/seed-involution-int8.tflite": ["runs/bench.json"],
    "invo-report deployment": ["runs/demo/report/report.md"],
}


@pytest.mark.parametrize("command", [c for c, (how, _) in COMMANDS.items() if how == RUN],
                         ids=lambda c: re.sub(r"[^\w.-]+", "_", c)[:60])
def test_readme_command_runs_as_written(workspace, tmp_path, command):
    cwd = tmp_path / "ws"
    shutil.copytree(workspace, cwd, symlinks=True)
    if command.startswith("invo-convert model.keras"):
        os.remove(cwd / "model.tflite")  # the README converts model.keras to the model.tflite other lines time
    if command.startswith("invo-train --model seed-involution"):
        shutil.rmtree(cwd / "runs" / "demo" / "train")  # the README's first command: nothing trained yet
    proc = run_readme_command(command, COMMANDS[command][1], cwd)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for prefix, paths in OUTPUTS.items():
        if command.startswith(prefix):
            for p in paths:
                assert (cwd / p).exists(), p
    if command.startswith("invo-train --model rednet-cifar"):
        # invo-train's own model.keras, converted the next day: a fresh invo-convert process
        proc = run_readme_command("invo-convert runs/rednet/model.keras --no-gpu-check", "", cwd)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "XNNPACK: all" in proc.stdout, proc.stdout
    if command.startswith("invo-convert model.keras --target gpu"):
        assert "target: gpu (involution form 'separable')" in proc.stdout and "warning" not in proc.stdout
    if command.endswith("--runtime tflite-micro"):
        assert "seed-involution-int8.tflite" in proc.stdout and " ok " in proc.stdout, proc.stdout
    if command.startswith("invo-convert saved_model_dir/"):
        assert "emulated GPU (SwiftShader): fully accelerated: ok" in proc.stdout, proc.stdout
    if command.endswith("--report runs/audit.json"):
        check_int8_conversion(proc, cwd / "runs" / "audit.json", cwd / "runs/demo/train/seed-involution/model.tflite",
                              "runs/demo/train/seed-involution/model.keras")
    if command.startswith("invo-report deployment"):
        check_deployment_report(cwd, proc)
    if command.endswith("--json runs/bench.json"):
        results = json.loads((cwd / "runs" / "bench.json").read_text())
        assert len(results["models"] if isinstance(results, dict) else results) == 2


def check_int8_conversion(proc, report, target, model):
    """What the int8 conversion of the trained seed-involution says and writes: a builtin-only, all-int8 file
    that passed the gate, one XNNPACK partition, right on the GPU path, each step announced."""
    assert "builtin ops only" in proc.stdout and "STRIDED_SLICE" in proc.stdout
    r = json.loads(report.read_text())
    a = r["audit"]
    assert a["builtin_only"] and a["max_tensor_rank"] <= 4 and not a["flex_ops"]
    assert a["inputs"][0]["dtype"] == "INT8" and a["outputs"][0]["dtype"] == "INT8"
    assert a["file_bytes"] == target.stat().st_size
    v = r["verify"]
    assert v["samples"] == 200  # --verify-samples' default, of the 359 held-out digits
    assert abs(v["top1_keras"] - v["top1_tflite"]) <= 0.01 + 1e-9, v
    assert r["xnnpack"]["fully_delegated"] and r["quality_gate"]["passed"], r["xnnpack"]
    assert "XNNPACK: all" in proc.stdout
    assert_gpu_ok(r)
    # The GPU lines say their unit (int8 outputs are compared in quantization steps) and what set the allowance.
    assert r["gpu"]["unit"] == "quantization steps" and r["gpu"]["allowance_rule"] == "the gate's int8 bound"
    assert f"(allowed {r['gpu']['allowed_abs_error']:.3g} quantization steps: the gate's int8 bound)" in proc.stdout
    assert "fully accelerated: ok" in proc.stdout
    assert "GPU fusion: longest elementwise chain" in proc.stdout and "(WebGPU's default limit 16): within" in proc.stdout
    # At least the int8 input and output are alive at once: 32x32x3 and 10 bytes.
    assert a["peak_activation_bytes"] >= 32 * 32 * 3 + 10
    assert f"activations: at most {a['peak_activation_bytes'] / 2**20:.2f} MiB alive at once" in proc.stdout
    assert "metadata: min_runtime_version" in proc.stdout
    # Every step says what it does (no silent seconds), on stderr, before the audit; each on a line of its own.
    for step in ("loading TensorFlow", f"loading {model}", "converting (int8)", "verifying against Keras",
                 "compiling on the LiteRT GPU accelerator"):
        assert f"\n... {step}" in "\n" + proc.stderr, proc.stderr
    assert max(len(line) for line in proc.stdout.splitlines() if not line.startswith("runs/")) <= 100
    # The CPU target is the default: the shift form, no op bound (the GPU target: tests/test_gpu_target.py).
    t = r["target"]
    assert r["strategy"] == "shift" and t["target"] == "cpu" and "max_layer_ops" not in t and not t["warnings"]
    assert min(t["layer_ops"].values()) > 20 and "target: cpu (involution form 'shift')" in proc.stdout
    # And what a microcontroller needs of it.
    assert r["micro"]["runs"] and "TFLite Micro: every op has a kernel" in proc.stdout


def check_deployment_report(cwd, proc):
    """The deployment report of the trained seed models: every validation sample, Keras's top-1 as training
    reported it, two timing rounds, the size ratio read from the files, the charts."""
    report_dir = cwd / "runs" / "demo" / "report"
    results = json.loads((cwd / "runs" / "demo" / "train" / "results.json").read_text())["models"]
    report = json.loads((report_dir / "report.json").read_text())
    rows = {(r["model"], r["dtype"]): r for r in report["rows"]}
    assert set(rows) == {(m, d) for m in ("seed-conv", "seed-involution") for d in ("float32", "int8")}
    for (model, dtype), r in rows.items():
        assert r["file_kb"] * 1024 == os.path.getsize(cwd / r["file"] if not os.path.isabs(r["file"]) else r["file"])
        assert r["validation_samples"] == 359 and abs(r["top1_keras"] - results[model]["val_accuracy"]) < 1e-6
        if dtype == "float32":
            assert r["top1"] == r["top1_keras"]
        t1 = r["cpu_1t"]  # two rounds: their median is their mean, between them
        assert t1["min"] <= t1["median"] <= t1["max"] and t1["median"] == r["cpu_1t_ms"]
        assert t1["median"] == pytest.approx((t1["min"] + t1["max"]) / 2)
    text = (report_dir / "report.md").read_text()
    assert proc.stdout.strip() == text.strip()
    conv, inv = rows["seed-conv", "float32"], rows["seed-involution", "float32"]
    sizes = [os.path.getsize(cwd / f if not os.path.isabs(f) else f) for f in (inv["file"], conv["file"])]
    assert f"{sizes[0] / sizes[1]:.3f}x float32" in text  # the files' own ratio, not the report's figures
    for trust in report["trust"]:
        assert "error" not in trust, trust
    for png in ("latency.png", "size.png"):
        assert (report_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
