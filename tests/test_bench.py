"""invo-bench on real runtimes: ai-edge-litert, the GPU accelerator, and a legacy tflite-runtime board."""

import csv
import json
import os
import subprocess
import time

import numpy as np
import pytest
from conftest import (ROOT, assert_one_line_error, invoke_cli, legacy_python, long_chain_model_file, require_gpu,
                      run_cli, user_env)

from benchmarks.runtime import cpu_fp16_arithmetic
from convert.api import convert_model
from invo_base.plumbing import json_text
from invo_base.tflite_model import TFLiteModel


@pytest.fixture(scope="module")
def models(seed_files):
    return seed_files


FAST = ["--num_runs", "5", "--warmup_runs", "1", "--min_secs", "0"]


def test_several_models_side_by_side_with_json_and_csv(models, tmp_path):
    paths = [str(models / f) for f in ("inv_f32.tflite", "inv_int8.tflite", "conv_f32.tflite")]
    start = time.perf_counter()
    proc = run_cli("benchmarks.cli", *paths, *FAST, "--num_threads", "2", "--json", str(tmp_path / "r.json"),
                   "--csv", str(tmp_path / "r.csv"))
    wall_ms = (time.perf_counter() - start) * 1000
    assert proc.returncode == 0, proc.stderr
    for name in ("inv_f32.tflite", "inv_int8.tflite", "conv_f32.tflite"):
        assert name in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 100  # a terminal's width; every figure in --json
    results = json.loads((tmp_path / "r.json").read_text())
    assert [os.path.basename(r["model"]) for r in results] == ["inv_f32.tflite", "inv_int8.tflite", "conv_f32.tflite"]
    for r in results:
        assert r["runtime"] == "litert" and r["accelerator"] == "CPU (XNNPACK)" and r["num_threads"] == 2
        assert r["accelerator_check"] is None and r["wrong_numbers"] is None  # a CPU run: nothing to compare with
        assert r["num_runs"] >= 5 and 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["file_kb"] * 1024 == os.path.getsize(r["model"])
        assert 10_000 < r["peak_rss_kb"] < 8_000_000  # kilobytes of a Python process, not bytes or pages
        assert 0 < r["first_ms"] and 0 < r["init_ms"] < wall_ms
    # What the tool says it measured fits in the time the process took.
    assert sum(r["init_ms"] + r["first_ms"] + r["num_runs"] * r["min_ms"] for r in results) < wall_ms
    assert results[1]["input_dtype"] == "int8"
    # The same layer's activations in one byte each, against four: the int8 file keeps under half as much alive.
    assert 0 < results[1]["peak_activations_kb"] < results[0]["peak_activations_kb"] / 2, results
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert len(rows) == 3 and float(rows[0]["median_ms"]) == pytest.approx(results[0]["median_ms"])
    assert rows[0]["accelerator_ok"] == "-"


def test_no_tensorflow_on_the_bench_path(models):
    code = ("import sys\nfrom benchmarks.cli import main\n"
            "try:\n    main([%r, '--num_runs', '3', '--min_secs', '0', '--quiet'])\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'involution', 'convert', 'quantize'))\n"
            "print('IMPORTED', bad)\n") % str(models / "inv_int8.tflite")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "IMPORTED []" in out.stdout


def test_legacy_board_tflite_runtime_214(models, tmp_path):
    """A venv with only tflite-runtime 2.14, numpy<2 and this package (no TensorFlow), as .ci/run builds it."""
    python = legacy_python()
    check = run_cli("pip", "list", "--format", "json", python=python)
    installed = {p["name"].lower(): p["version"] for p in json.loads(check.stdout)}
    assert installed["tflite-runtime"] == "2.14.0" and installed["numpy"].startswith("1.")
    assert "tensorflow" not in installed and "ai-edge-litert" not in installed
    proc = run_cli("benchmarks.cli", str(models / "inv_int8.tflite"), str(models / "inv_f32.tflite"), *FAST,
                   "--json", str(tmp_path / "legacy.json"), python=python, env={"PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "legacy.json").read_text())
    assert {r["runtime"] for r in results} == {"tflite-runtime"}
    # Measured, not assumed: tflite-runtime 2.14's XNNPACK takes the float32 model and no int8 op.
    assert [r["fully_delegated"] for r in results] == [False, True], results
    proc = run_cli("benchmarks.cli", str(models / "inv_int8.tflite"), "--use_gpu", python=python, env={"PYTHONPATH": ""})
    assert_one_line_error(proc, "--delegate")
    # The board reads files with the tflite package's schema binding (tflite-runtime carries none), as the host
    # reads them with ai-edge-litert's.
    code = ("import json, sys\nfrom invo_base import schema\nfrom invo_base.tflite_model import TFLiteModel\n"
            "print(schema.reader().__name__)\nprint(json.dumps(TFLiteModel.from_file(sys.argv[1]).summary()))")
    path = str(models / "inv_int8.tflite")
    board = subprocess.run([python, "-c", code, path], capture_output=True, text=True, env=user_env(PYTHONPATH=""),
                           cwd=str(tmp_path))
    assert board.returncode == 0, board.stderr
    name, summary = board.stdout.splitlines()
    assert name == "tflite" and json.loads(summary) == json.loads(json_text(TFLiteModel.from_file(path).summary()))


def test_dynamic_range_on_the_legacy_board(trained_seed, tmp_path):
    """TF 2.21 writes a dynamic-range Dense layer as FULLY_CONNECTED version 12 (min_runtime_version 2.17.0), which
    tflite-runtime 2.14 cannot load: the audit says so, invo-bench there says what loads it, and --legacy-runtime
    writes a file it runs."""
    from benchmarks.runtime import needs_newer_runtime
    from convert.cli import format_audit

    keras_path = str(trained_seed[0] / "seed-involution" / "model.keras")
    new, old = str(tmp_path / "dyn.tflite"), str(tmp_path / "dyn_legacy.tflite")
    result = convert_model(keras_path, new, quantize="dynamic", gpu=False)
    assert needs_newer_runtime(TFLiteModel.from_file(new).min_runtime_version) == "2.17.0"
    assert "runtime: needs TFLite 2.17.0 or newer; tflite-runtime 2.14.0" in format_audit(result)
    result = convert_model(keras_path, old, quantize="dynamic", gpu=False, legacy_runtime=True)
    assert needs_newer_runtime(TFLiteModel.from_file(old).min_runtime_version) is None \
        and "runtime:" not in format_audit(result)
    assert result["quality_gate"]["passed"] and set(TFLiteModel.from_file(old).op_output_types("FULLY_CONNECTED")) \
        == {"FLOAT32"}  # still dynamic range: int8 weights, float outputs
    python = legacy_python()
    proc = run_cli("benchmarks.cli", new, *FAST, python=python, env={"PYTHONPATH": ""})
    assert_one_line_error(proc, "tflite-runtime 2.14.0 cannot load", "needs TFLite 2.17.0", "--legacy-runtime")
    proc = run_cli("benchmarks.cli", old, *FAST, "--json", str(tmp_path / "l.json"), python=python, env={"PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "l.json").read_text())[0]["runtime"] == "tflite-runtime"


def test_version_comparison_reads_release_strings():
    from benchmarks.runtime import version_tuple

    assert version_tuple("2.17.0") > version_tuple("2.14.0") > version_tuple("2.3.0") > version_tuple("1.15.0")
    assert version_tuple("2.14.0rc1") == (2, 14, 0) and version_tuple("2.14") < version_tuple("2.14.1")


def test_gpu_accelerator_timing_waits_for_the_result(models, tmp_path):
    require_gpu()
    proc = run_cli("benchmarks.cli", str(models / "inv_f32.tflite"), str(models / "inv_int8.tflite"), "--use_gpu",
                   "--require_full_delegation", *FAST, "--json", str(tmp_path / "g.json"))
    assert proc.returncode == 0, proc.stderr
    for r in json.loads((tmp_path / "g.json").read_text()):
        assert r["runtime"] == "litert-compiled" and r["accelerator"].startswith("GPU") and r["fully_delegated"]
        # Read-back is inside the timed region: an emulated GPU cannot finish a 3-layer net in microseconds.
        assert r["min_ms"] > 0.2
    assert "emulated" in proc.stdout


def test_input_file(models, tmp_path):
    x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "one.npy", x[0])  # without the batch axis
    for f in ("x.npy", "one.npy"):
        proc = run_cli("benchmarks.cli", str(models / "inv_f32.tflite"), "--input", str(tmp_path / f), *FAST)
        assert proc.returncode == 0, proc.stderr
    np.save(tmp_path / "shape.npy", x[:, :16])
    np.save(tmp_path / "dtype.npy", x.astype(np.float64))
    assert_one_line_error(run_cli("benchmarks.cli", str(models / "inv_f32.tflite"), "--input", str(tmp_path / "shape.npy")),
                          "shape (1, 32, 32, 3)")
    assert_one_line_error(run_cli("benchmarks.cli", str(models / "inv_f32.tflite"), "--input", str(tmp_path / "dtype.npy")),
                          "float32", "float64")


@pytest.fixture(scope="module")
def flex_model(tmp_path_factory):
    import keras
    import tensorflow as tf

    from involution.reference import InvolutionReference

    inp = keras.Input((8, 8, 4), batch_size=1)
    conv = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, InvolutionReference(4, 2, 3, 1, 2)(inp)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    path = tmp_path_factory.mktemp("flex") / "flex.tflite"
    path.write_bytes(conv.convert())
    return path


def test_bad_input(models, flex_model, tmp_path):
    m = str(models / "inv_f32.tflite")
    (tmp_path / "corrupt.tflite").write_bytes((models / "inv_f32.tflite").read_bytes()[:3000])
    (tmp_path / "libfake_delegate.so").write_text("not a library")
    cases = [
        ([str(tmp_path / "missing.tflite")], ["no such model file"]),
        ([str(tmp_path / "corrupt.tflite")], ["corrupt or truncated"]),
        ([str(flex_model)], ["FlexExtractImagePatches", "invo-convert"]),
        ([m, "--num_runs", "0"], ["--num_runs"]),
        ([m, "--num_runs", "-3"], ["--num_runs"]),
        ([m, "--delegate", str(tmp_path / "libfake_delegate.so")], ["does not load"]),
        ([m, "--delegate", str(tmp_path / "nope.so")], ["no such delegate"]),
        ([m, "--use_gpu"], ["no GPU could be created", "--gpu_fallback"]),
    ]
    for args, needles in cases:
        env = {"VK_ICD_FILENAMES": str(tmp_path / "no_icd.json")} if "--use_gpu" in args else None
        assert_one_line_error(run_cli("benchmarks.cli", *args, env=env), *needles)
    proc = run_cli("benchmarks.cli", m, "--use_gpu", "--gpu_fallback", *FAST, "--json", str(tmp_path / "fb.json"),
                   env={"VK_ICD_FILENAMES": str(tmp_path / "no_icd.json")})
    assert proc.returncode == 0, proc.stderr
    (r,) = json.loads((tmp_path / "fb.json").read_text())
    assert r["accelerator"] == "CPU (no GPU: fallback)" and not r["fully_delegated"]


@pytest.fixture(scope="module")
def gpu_unfriendly(tmp_path_factory):
    """ARG_MAX the GPU accelerator refuses; CUMSUM it cannot take either (SwiftShader's crashes the process)."""
    import tensorflow as tf

    d = tmp_path_factory.mktemp("unfriendly")
    fns = {"argmax": lambda x: tf.cast(tf.argmax(x, axis=-1), tf.float32),
           "cumsum": lambda x: tf.math.cumsum(x, axis=-1) + 1.0}
    for name, fn in fns.items():
        f = tf.function(lambda x, fn=fn: fn(tf.nn.relu(x) * 2.0), input_signature=[tf.TensorSpec([1, 8, 8, 4], tf.float32)])
        conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()])
        (d / f"{name}.tflite").write_bytes(conv.convert())
    return d


def test_gpu_check_names_the_ops_left_on_cpu(gpu_unfriendly):
    require_gpu()
    from benchmarks.gpu_check import check_gpu

    r = check_gpu(str(gpu_unfriendly / "argmax.tflite"))
    assert r["available"] and not r["fully_delegated"] and not r["ok"]
    assert "ARG_MAX" in r["ops_on_cpu"] and "MUL" not in r["ops_on_cpu"]
    r = check_gpu(str(gpu_unfriendly / "cumsum.tflite"))
    assert not r["ok"] and any(op.startswith("CUMSUM") for op in r["ops_on_cpu"])


def test_bench_gpu_on_a_model_the_gpu_cannot_take_fails_cleanly(gpu_unfriendly):
    require_gpu()
    for name in ("argmax", "cumsum"):
        proc = run_cli("benchmarks.cli", str(gpu_unfriendly / f"{name}.tflite"), "--use_gpu", *FAST)
        assert_one_line_error(proc, "GPU")


@pytest.fixture(scope="module")
def two_input_model(tmp_path_factory):
    """out = 2 * a + b: which array reaches which input shows in the output."""
    import keras

    from convert.export import to_tflite

    a, b = keras.Input((4, 4, 2)), keras.Input((4, 4, 2))
    path = tmp_path_factory.mktemp("two") / "two.tflite"
    path.write_bytes(to_tflite(keras.Model([a, b], a * 2.0 + b)))
    return path


def test_input_file_with_several_inputs_by_name_or_position(two_input_model, tmp_path):
    from benchmarks.bench import load_input_file
    from benchmarks.runtime import load

    runner = load(str(two_input_model), "litert")
    names = [d["name"] for d in runner.inputs]
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((1, 4, 4, 2)).astype(np.float32) for _ in range(2))
    assert [d["signature_name"] for d in runner.inputs] == ["input_0", "input_1"]  # the Keras model's order
    np.savez(tmp_path / "named.npz", **{names[1]: b, names[0]: a})  # tensor names, stored in the other order
    np.savez(tmp_path / "signature.npz", input_1=b, input_0=a)
    np.savez(tmp_path / "positional.npz", a[0], b[0])  # arr_0, arr_1, without the batch axis
    for f in ("named.npz", "signature.npz", "positional.npz"):
        arrays = load_input_file(str(tmp_path / f), runner)
        np.testing.assert_allclose(runner(*arrays)[0], 2 * a + b, rtol=1e-6, atol=1e-6)
        proc = run_cli("benchmarks.cli", str(two_input_model), "--input", str(tmp_path / f), *FAST,
                       "--json", str(tmp_path / "r.json"))
        assert proc.returncode == 0, proc.stderr
        (r,) = json.loads((tmp_path / "r.json").read_text())
        assert r["num_runs"] >= 5 and r["input_dtype"] == "float32"
    np.savez(tmp_path / "one.npz", **{names[0]: a})
    assert_one_line_error(run_cli("benchmarks.cli", str(two_input_model), "--input", str(tmp_path / "one.npz")),
                          "missing input array")


def test_compiled_model_takes_each_inputs_own_quantization(tmp_path):
    """int8 inputs calibrated on ranges 100x apart: the CompiledModel runner reads each input's scale from the
    file by signature name, as the Interpreter reports it."""
    import keras

    from benchmarks.runtime import load
    from convert.export import to_tflite

    a, b = keras.Input((4, 4, 2)), keras.Input((4, 4, 2))
    rng = np.random.default_rng(0)
    rep = [[rng.random((1, 4, 4, 2), dtype=np.float32), 100 * rng.random((1, 4, 4, 2), dtype=np.float32)]
           for _ in range(8)]
    path = tmp_path / "two_int8.tflite"
    path.write_bytes(to_tflite(keras.Model([a, b], a * 2.0 + b), "int8", "int8", rep))
    interp = {d["signature_name"]: d["scale"] for d in load(str(path), "litert").inputs}
    compiled = load(str(path), "litert-compiled")
    assert [d["name"] for d in compiled.inputs] == ["input_0", "input_1"]
    assert {d["name"]: d["scale"] for d in compiled.inputs} == interp
    assert interp["input_1"] > 50 * interp["input_0"]
    # The outputs' details too: the same on both runtimes, the scale the file stores, in the order outputs() gives.
    (out_i,), (out_c,) = load(str(path), "litert").output_details, compiled.output_details
    assert (out_c["shape"], out_c["dtype"], out_c["scale"], out_c["zero_point"]) == \
        (out_i["shape"], out_i["dtype"], out_i["scale"], out_i["zero_point"]) == \
        ([1, 4, 4, 2], "int8", TFLiteModel.from_file(str(path)).io("outputs")[0].scale, out_i["zero_point"])
    assert compiled(*(np.zeros((1, 4, 4, 2), np.int8),) * 2)[0].dtype == np.dtype(out_c["dtype"])


@pytest.fixture(scope="module")
def wrong_on_gpu(tmp_path_factory):
    return long_chain_model_file(tmp_path_factory.mktemp("wrong") / "chain60.tflite")


def test_check_gpu_exits_1_naming_the_largest_difference(wrong_on_gpu, models):
    require_gpu()
    proc = run_cli("benchmarks.cli", str(wrong_on_gpu), "--check_gpu", *FAST)
    line = assert_one_line_error(proc, "GPU output is wrong", "largest difference", "output 0 index")
    assert "allowed" in line and proc.stdout == ""  # nothing timed: the check comes first
    proc = run_cli("benchmarks.cli", str(models / "inv_f32.tflite"), str(models / "inv_int8.tflite"), "--check_gpu",
                   *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "inv_f32.tflite: GPU check ok" in proc.stderr and "fully accelerated" in proc.stderr
    assert "quantization steps" in proc.stderr.split("inv_int8.tflite: GPU check ok")[1]  # int8: in steps


def test_use_gpu_compares_what_it_times_with_the_cpu(wrong_on_gpu, models, tmp_path):
    """Without --check_gpu too, a GPU run's outputs on the input it times are checked against the CPU's: wrong
    numbers are timed, marked WRONG in the table, the JSON and the CSV, and named in a warning; right ones ok."""
    require_gpu()
    proc = run_cli("benchmarks.cli", str(wrong_on_gpu), str(models / "inv_int8.tflite"), "--use_gpu", *FAST,
                   "--json", str(tmp_path / "g.json"), "--csv", str(tmp_path / "g.csv"))
    assert proc.returncode == 0, proc.stderr
    wrong, right = json.loads((tmp_path / "g.json").read_text())
    assert wrong["fully_delegated"] and not wrong["accelerator_check"]["ok"], wrong["accelerator_check"]
    assert wrong["accelerator_check"]["max_abs_error"] > wrong["accelerator_check"]["allowed_abs_error"]
    assert right["accelerator_check"]["ok"] and right["accelerator_check"]["unit"] == "quantization steps"
    assert "GPU output is wrong" in wrong["wrong_numbers"] and right["wrong_numbers"] is None
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "chain60.tflite" in warnings[0] and "largest difference" in warnings[0], warnings
    table = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.endswith(".tflite") or ".tflite " in line}
    assert "WRONG" in table["chain60.tflite"] and "ok" in table["inv_int8.tflite"], proc.stdout
    with open(tmp_path / "g.csv") as f:
        assert [r["accelerator_ok"] for r in csv.DictReader(f)] == ["WRONG", "ok"]


def _cancelling_model_file(path):
    """x -> (20x, 19x) -> 4 times their difference: 4x in exact arithmetic, but each product rounded to FP16's
    11 bits leaves about 1% of the output's scale, past float32's 1e-3 and within FP16's allowance, whether the
    CPU computes FP16 natively or emulates it (FP16 values, float32 sums: seed-conv's logits then move only 5e-4)."""
    import keras
    import tensorflow as tf

    up = np.concatenate([20 * np.eye(4), 19 * np.eye(4)], axis=1)[None, None]  # [1, 1, 4, 8]
    down = 4 * np.concatenate([np.eye(4), -np.eye(4)], axis=0)[None, None]  # [1, 1, 8, 4]
    x = keras.Input((8, 8, 4), batch_size=1)
    y = keras.layers.Conv2D(8, 1, use_bias=False, kernel_initializer=keras.initializers.Constant(up))(x)
    y = keras.layers.Conv2D(4, 1, use_bias=False, kernel_initializer=keras.initializers.Constant(down))(y)
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(x, y)).convert())
    return str(path)


def test_a_gpu_in_fp16_is_held_to_fp16s_bound_only_where_it_agrees_in_float32(wrong_on_gpu, tmp_path):
    """A real GPU computes in FP16 unless told not to (an H200 through Vulkan did), and the check held it to
    float32's 1e-3: right models were called wrong.  Now a difference past float32's allowance is FP16's rounding
    only when the same GPU in float32 agrees with the CPU.  SwiftShader computes in float32, so XNNPACK's forced
    FP16 supplies the real FP16 outputs here."""
    require_gpu()
    if not _xnnpack_runs_fp16():
        pytest.skip("XNNPACK cannot run FP16 on this CPU to give FP16 outputs (test_precision_fp16_runs_fp16_or_refuses)")
    from benchmarks import runtime as rt
    from benchmarks.gpu_check import describe_failure, gpu_in_float32, judge_gpu, run_once

    path = _cancelling_model_file(tmp_path / "cancel.tflite")
    cpu = rt.CompiledRunner(path, "cpu")
    arrays = rt.random_inputs(cpu.inputs)
    ref = run_once(cpu, arrays)
    fp16 = run_once(rt.CompiledRunner(path, "cpu", precision="fp16"), arrays)
    strict = judge_gpu(ref, fp16, cpu.model)  # float32's allowance alone
    assert not strict["within"] and strict["precision"] is None, strict  # wrong numbers say nothing of precision
    judged = judge_gpu(ref, fp16, cpu.model, fp32_outputs=lambda: gpu_in_float32(path, arrays))
    scale = float(np.max(np.abs(ref[0])))
    assert judged["within"] and judged["fp16_allowance"] and judged["precision"] == "fp16", judged
    assert judged["fp32_rerun_error"] <= 1e-3 * scale
    assert judged["allowed_abs_error"] == pytest.approx(rt.FP16_ALLOWED * scale)
    # A GPU that is wrong in float32 too gets no FP16 allowance: the 60-ADD chain past the texture limit.
    path = str(wrong_on_gpu)
    cpu = rt.CompiledRunner(path, "cpu")
    arrays = rt.random_inputs(cpu.inputs)
    ref = run_once(cpu, arrays)
    out = run_once(rt.CompiledRunner(path, "gpu"), arrays)
    judged = judge_gpu(ref, out, cpu.model, fp32_outputs=lambda: gpu_in_float32(path, arrays))
    assert not judged["within"] and not judged.get("fp16_allowance"), judged
    assert "told to compute in float32 it is wrong too" in describe_failure(path, dict(judged, available=True,
                                                                                         fully_delegated=True))


def test_gpu_precision_loss_allowed_false_computes_in_float32(models, tmp_path):
    """benchmark_model's --gpu_precision_loss_allowed: false tells the LiteRT GPU to compute in float32 (measured:
    the 'prec' column), and is refused where the runtime has no such setting."""
    require_gpu()
    from benchmarks.cli import bench

    proc = invoke_cli(bench, models / "inv_f32.tflite", "--use_gpu", "--gpu_precision_loss_allowed", "false", *FAST,
                      "--json", tmp_path / "g.json")
    assert proc.returncode == 0, proc.stderr
    (r,) = json.loads((tmp_path / "g.json").read_text())
    check = r["accelerator_check"]
    assert check["ok"] and check["precision"] == "fp32" and "fp32_rerun_error" not in check, check
    assert r["fp16_ran"] is False and " fp32 " in proc.stdout.splitlines()[2], proc.stdout
    proc = invoke_cli(bench, models / "inv_f32.tflite", "--runtime", "litert", "--use_gpu", "--delegate",
                      tmp_path / "libgpu.so", "--gpu_precision_loss_allowed", "false", *FAST)
    assert_one_line_error(proc, "--gpu_precision_loss_allowed false", "litert has no such option")


def test_use_gpu_without_a_vulkan_driver_falls_back_to_swiftshader_and_says_so(models, tmp_path):
    require_gpu()
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "VK_ICD_FILENAMES"}
    env["PYTHONPATH"] = ROOT
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", str(models / "inv_f32.tflite"), "--use_gpu", *FAST,
                           "--json", str(tmp_path / "g.json")], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "the GPU ran on SwiftShader" in proc.stdout
    r = json.loads((tmp_path / "g.json").read_text())[0]
    assert r["swiftshader_fallback"] and r["accelerator"] == "GPU (emulated)" and r["fully_delegated"]


def _xnnpack_runs_fp16():
    """Whether XNNPACK can be forced to FP16 here: with FP16 arithmetic, or emulated on x86 with AVX2."""
    return cpu_fp16_arithmetic() in ("native", "emulated")


def test_precision_fp16_runs_fp16_or_refuses(models, tmp_path):
    """--precision fp16 forces XNNPACK's FP16 inference; what ran is measured against float32 reference kernels.
    Where this CPU only emulates FP16 (x86 without AVX512-FP16: an AMD EPYC here, 1.4-1.5x float32's time), the
    run is marked so in the table, the JSON and the CSV: its timings are not FP16 speed."""
    how = cpu_fp16_arithmetic()
    proc = run_cli("benchmarks.cli", str(models / "conv_f32.tflite"), "--precision", "fp16", *FAST,
                   "--json", str(tmp_path / "p.json"), "--csv", str(tmp_path / "p.csv"))
    if how == "none":
        assert_one_line_error(proc, "FP16 inference did not run")
        return
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "p.json").read_text())[0]
    assert r["runtime"] == "litert-compiled" and r["precision"] == "fp16" and r["fp16_ran"] is True
    assert r["fp16_arithmetic"] == how, (r["fp16_arithmetic"], how)
    assert 1e-4 < r["diff_vs_fp32_reference"] < 0.05  # FP16's rounding, not float32's, and not garbage
    row = proc.stdout.splitlines()[2].split()
    assert ("fp16*" if how == "emulated" else "fp16") in row and "ok" in row, proc.stdout  # within FP16's rounding
    assert ("fp16* emulated FP16" in proc.stdout) is (how == "emulated"), proc.stdout
    with open(tmp_path / "p.csv") as f:
        (line,) = csv.DictReader(f)
    assert line["precision_ran"] == "fp16" and line["fp16_arithmetic"] == how
    # The same file at the default precision computes in float32 (it carries no reduced_precision_support).
    proc = run_cli("benchmarks.cli", str(models / "conv_f32.tflite"), *FAST, "--json", str(tmp_path / "d.json"))
    (r,) = json.loads((tmp_path / "d.json").read_text())
    assert r["fp16_ran"] is None and r["fp16_arithmetic"] is None and "fp16*" not in proc.stdout


def test_cpu_fp16_arithmetic_reads_the_feature_flags():
    """XNNPACK's rule (xnn_is_f16_compatible_config, xnn_is_f16_supported_natively) read from /proc/cpuinfo's
    flags: FP16 arithmetic is native, x86 with AVX2 emulates, the rest cannot.  That this machine's verdict is what
    its forced FP16 run does is test_precision_fp16_runs_fp16_or_refuses."""
    x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx f16c {}\n"
    assert cpu_fp16_arithmetic(x86.format("avx2 avx512f avx512_fp16 amx_int8"), "x86_64") == "native"
    assert cpu_fp16_arithmetic(x86.format("avx2 avx512f avx512_bf16"), "x86_64") == "emulated"  # AMD Zen 4
    assert cpu_fp16_arithmetic(x86.format(""), "x86_64") == "none"  # f16c conversions alone: XNNPACK wants AVX2
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics {}\n"
    assert cpu_fp16_arithmetic(arm.format("fphp asimdhp cpuid asimdrdm"), "aarch64") == "native"  # Cortex-A76
    assert cpu_fp16_arithmetic(arm.format("cpuid"), "aarch64") == "none"  # Cortex-A72 (Raspberry Pi 4)
    assert cpu_fp16_arithmetic("processor\t: 0\n", "x86_64") == "unknown"


def test_the_fp16_metadata_is_a_hint_that_x86_does_not_take(trained_seed, tmp_path):
    """The README's claim: a float16 file's reduced_precision_support is XNNPACK's hint to compute in FP16, which
    ai-edge-litert 2.3 does not act on on x86, neither with AVX512-FP16 (a Sapphire Rapids server, measured) nor
    where it only emulates FP16 (XNNPACK takes the hint only with FP16 arithmetic): invo-bench measures float32
    at the default precision and FP16 when forced.  A runtime that starts taking the hint here fails this test,
    and the README must say so."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64") or not _xnnpack_runs_fp16():
        pytest.skip("the claim is about x86 CPUs on which XNNPACK runs FP16 when forced")
    from benchmarks.cli import bench

    out, _ = trained_seed
    path = tmp_path / "inv_f16.tflite"
    convert_model(str(out / "seed-involution" / "model.keras"), str(path), quantize="float16", gpu=False)
    assert TFLiteModel.from_file(str(path)).metadata["reduced_precision_support"].rstrip(b"\0") == b"fp16accfp16"
    for precision, fp16 in (("default", False), ("fp16", True)):
        proc = invoke_cli(bench, path, "--precision", precision, *FAST, "--json", tmp_path / f"{precision}.json")
        assert proc.returncode == 0, proc.stderr
        (r,) = json.loads((tmp_path / f"{precision}.json").read_text())
        assert r["fp16_ran"] is fp16, (precision, r["diff_vs_fp32_reference"])


def test_an_fp16_run_that_overflows_is_timed_but_marked_wrong(tmp_path):
    """Two 1x1 convs scaling by 300 and 100: fine in float32, past FP16's 65504 in FP16.  The forced FP16 run
    is measured against float32 reference kernels, marked WRONG and named in a warning, not passed off as FP16
    rounding."""
    if not _xnnpack_runs_fp16():
        pytest.skip("XNNPACK cannot run FP16 on this CPU (test_precision_fp16_runs_fp16_or_refuses)")
    import keras
    import tensorflow as tf

    x = keras.Input((8, 8, 4), batch_size=1)
    y = keras.layers.Conv2D(4, 1, use_bias=False, kernel_initializer=keras.initializers.Constant(300.0))(x)
    y = keras.layers.Conv2D(4, 1, use_bias=False, kernel_initializer=keras.initializers.Constant(100.0))(y)
    path = tmp_path / "overflow.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(x, y)).convert())
    # The host reports' timing loop takes no figure from it: one error naming the file.
    from benchmarks.host.timing import Schedule, interleaved
    from benchmarks.runtime import RuntimeUnavailable

    with pytest.raises(RuntimeUnavailable, match="overflow.tflite: the FP16 run's outputs differ"):
        interleaved([("overflow", str(path))], Schedule(rounds=1, num_runs=2),
                    options=lambda key: {"runtime": "litert-compiled", "precision": "fp16"})
    proc = run_cli("benchmarks.cli", str(path), "--precision", "fp16", *FAST, "--csv", str(tmp_path / "o.csv"),
                   "--json", str(tmp_path / "o.json"))
    assert proc.returncode == 0, proc.stderr
    # Strict JSON (no NaN or Infinity, which jq and JavaScript refuse): the infinite difference is null, and the
    # file says what is wrong.
    (r,) = json.loads((tmp_path / "o.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert r["fp16_ran"] is True and r["diff_vs_fp32_reference"] is None and "FP16" in r["wrong_numbers"]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "overflow.tflite" in warnings[0] and "FP16" in warnings[0], proc.stderr
    row = proc.stdout.splitlines()[2].split()
    assert row[5] in ("fp16", "fp16*") and "WRONG" in row, proc.stdout  # fp16*: emulated here
    with open(tmp_path / "o.csv") as f:
        (r,) = csv.DictReader(f)
    assert r["precision_ran"] == "fp16" and r["accelerator_ok"] == "WRONG"


def test_precision_fp16_is_refused_on_the_legacy_board(models):
    python = legacy_python()
    proc = run_cli("benchmarks.cli", str(models / "conv_f32.tflite"), "--precision", "fp16", *FAST, python=python,
                   env={"PYTHONPATH": ""})
    assert_one_line_error(proc, "ai-edge-litert", "tflite-runtime 2.14")


def test_evicted_caches_are_said_and_slower_per_run_than_warm(models, tmp_path):
    """--evict_cache_mb writes a buffer before every run: the run starts cold, and the JSON says which regime."""
    path = str(models / "conv_f32.tflite")
    proc = run_cli("benchmarks.cli", path, path, *FAST, "--json", str(tmp_path / "w.json"))
    warm = json.loads((tmp_path / "w.json").read_text())
    proc = run_cli("benchmarks.cli", path, "--evict_cache_mb", "64", *FAST, "--json", str(tmp_path / "e.json"))
    assert proc.returncode == 0, proc.stderr
    cold = json.loads((tmp_path / "e.json").read_text())[0]
    assert cold["cache"].startswith("evicted (64 MB") and warm[0]["cache"].startswith("warm")
    # Every evicted run reads the 1.2 MB model from DRAM: even its fastest run is slower than the fastest warm one
    # (measured ~2x). Fastest runs, not medians: a busy machine only adds time, so medians cross and minima do not.
    assert cold["min_ms"] > min(r["min_ms"] for r in warm), (cold, warm)
    assert cold["peak_rss_kb"] < warm[0]["peak_rss_kb"] + 32_000  # the model's memory, not the 64 MB buffer's
    proc = run_cli("benchmarks.cli", path, "--evict_cache_mb", "-1", *FAST)
    assert_one_line_error(proc, "--evict_cache_mb")


def test_float_data_never_reaches_an_integer_input_without_a_scale():
    """An int8 input without a quantization scale has no real values: float data for it is an error (it once
    fell back to 1/255), and random benchmark data for it is 0s and 1s of its dtype."""
    from benchmarks.runtime import random_inputs, to_input_dtype

    detail = {"name": "ids", "shape": [1, 4], "dtype": "int8", "scale": 0.0, "zero_point": 0}
    with pytest.raises(ValueError, match="without a quantization scale"):
        to_input_dtype(np.ones((1, 4), np.float32), detail)
    (x,) = random_inputs([detail])
    assert x.dtype == np.int8 and set(np.unique(x)) <= {0, 1}
    scaled = dict(detail, scale=0.5, zero_point=-3)
    np.testing.assert_array_equal(to_input_dtype(np.array([[0.0, 1.0, 2.0, 200.0]], np.float32), scaled),
                                  [[-3, -1, 1, 127]])  # x / scale + zero point, clipped to int8


def test_percentiles_are_numpys_linear_ones():
    """p90/p99 as benchmark_model reports them: linear interpolation between the sorted runs."""
    from benchmarks.bench import _percentile

    for n in (1, 2, 7, 50):
        ms = sorted(np.random.default_rng(n).random(n) * 10)
        for p in (0, 50, 90, 99, 100):
            assert _percentile(ms, p) == pytest.approx(np.percentile(ms, p))


def test_table_keeps_whole_names_and_says_why_runs_exceed_num_runs():
    """Names differ at their end (-int8, -fp16): never cut; more runs than --num_runs come from --min_secs."""
    from benchmarks.cli import format_table

    row = dict(model="/x/seed-involution-int8-float-agg.tflite", accelerator="CPU (XNNPACK)", fully_delegated=True,
               num_threads=1, file_kb=40.4, init_ms=1.0, median_ms=0.04, p90_ms=0.05, min_ms=0.03)
    table = format_table([dict(row, num_runs=20563, num_runs_asked=200, min_secs=1.0)])
    assert "seed-involution-int8-float-agg.tflite" in table
    assert "runs: at least --num_runs (200) and --min_secs (1 s), as benchmark_model does" in table
    assert "--min_secs" not in format_table([dict(row, num_runs=200, num_runs_asked=200, min_secs=1.0)])


def test_the_gpu_allowance_says_what_set_it():
    """One int8 file: invo-bench, with no float model, allows a share of the output range (at least 2 steps);
    invo-convert passes the gate's bound in steps, which then sets it."""
    from benchmarks.gpu_check import allowance_and_rule

    narrow, wide = [np.array([[0, 1, 2]], np.int8)], [np.array([[-128, 0, 127]], np.int8)]
    assert allowance_and_rule(narrow, None) == (2.0, "at least 2 steps")
    assert allowance_and_rule(wide, None) == (pytest.approx(0.03 * 255), "3% of the output range")
    assert allowance_and_rule(wide, None, int_steps=34.3) == (34.3, "the gate's int8 bound")
