"""On a microcontroller: TFLite Micro runs the int8 files (invo-bench --runtime tflite-micro, no TensorFlow), the
arena it reports is the one the interpreter needs, the audit of an int8 conversion says what TFLM needs, and
--c-array writes C source that a compiler builds into the file's exact bytes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, run_cli

from benchmarks.micro import MICRO_ALLOWED_STEPS, micro_benchmark, reference_kernels, reference_outputs
from convert.api import convert_model
from convert.cli import format_audit
from invo_base.c_array import resolver_method
from invo_base.tflite_model import TFLiteModel

micro = pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                            reason="scripts/setup.sh installs tflite-micro (the [micro] extra)")


def test_tflm_runs_the_seed_int8_files_without_tensorflow(seed_files, tmp_path):
    paths = [str(seed_files / f) for f in ("inv_int8.tflite", "conv_int8.tflite")]
    code = ("import sys\nfrom benchmarks.cli import main\n"
            "try:\n    main([*sys.argv[1:], '--runtime', 'tflite-micro', '--num_runs', '3', '--json', %r])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print('IMPORTED', sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
            ) % str(tmp_path / "m.json")
    proc = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stdout and "not a microcontroller's speed" in proc.stdout
    results = json.loads((tmp_path / "m.json").read_text())
    for r, path in zip(results, paths):
        a = r["arena"]
        assert r["ok"] and r["max_steps"] <= MICRO_ALLOWED_STEPS and r["checked_against"] == "reference", r
        assert r["file_bytes"] == os.path.getsize(path) and a["total"] == a["activations"] + a["persistent"], r
        assert a["by_kind"]["NodeAndRegistration struct"] > 0 and r["ops"] == len(TFLiteModel.from_file(path).ops)
        # The reported arena is what the interpreter needs: it runs in exactly that, and not in 1 KB less.
        data = open(path, "rb").read()
        interp = micro.Interpreter.from_bytes(data, arena_size=a["total"])
        interp.set_input(np.zeros(interp.get_input_details(0)["shape"], np.int8), 0)
        interp.invoke()
        with pytest.raises(RuntimeError):
            micro.Interpreter.from_bytes(data, arena_size=a["total"] - 1024)
    # The involution model has 24x fewer parameters and needs more RAM: per-op data, not activations.
    inv, conv = (r["arena"] for r in results)
    assert inv["activations"] < conv["activations"] and inv["persistent"] > 4 * conv["persistent"]


def test_tflm_options_that_do_not_apply_are_one_line_errors(seed_files):
    proc = run_cli("benchmarks.cli", str(seed_files / "inv_int8.tflite"), "--runtime", "tflite-micro", "--use_gpu")
    assert_one_line_error(proc, "--use_gpu", "tflite-micro")


def test_an_int8_sum_is_checked_against_the_builtin_kernels(trained_seed, tmp_path):
    """The GPU target's form sums its products with one SUM.  LiteRT's reference int8 SUM overflows (LiteRT issue
    4079): on this file it is far from TFLM and from LiteRT's builtin kernels, which agree within a step."""
    path = str(tmp_path / "sep.tflite")
    convert_model(str(trained_seed[0] / "seed-involution" / "model.keras"), path, quantize="int8", calib="digits",
                  calib_samples=50, target="gpu", gpu=False)
    model = TFLiteModel.from_file(path)
    assert "SUM" in model.ops and reference_kernels(model) == "builtin"
    r = micro_benchmark(path, num_runs=1)
    assert r["ok"] and r["max_steps"] <= MICRO_ALLOWED_STEPS and r["checked_against"] == "builtin", r
    d = micro.Interpreter.from_file(path).get_input_details(0)
    x = [np.random.default_rng(0).integers(-128, 127, d["shape"]).astype(np.int8)]
    wrong = reference_outputs(path, x, "reference")[0].astype(int) - reference_outputs(path, x, "builtin")[0]
    assert np.abs(wrong).max() > 10 * MICRO_ALLOWED_STEPS


def test_int8_audit_says_what_tflm_needs_and_c_array_builds_into_the_file(trained_seed, tmp_path):
    out = tmp_path / "seed_int8.tflite"
    result = convert_model(str(trained_seed[0] / "seed-involution" / "model.keras"), str(out), quantize="int8",
                           calib="digits", calib_samples=50, gpu=False, c_array=True)
    m = result["micro"]
    assert m["runs"] and not any(m["gaps"].values()) and m["arena"]["total"] > 0, m
    audit = format_audit(result)
    assert f"TFLite Micro: every op has a kernel; arena {m['arena']['total'] / 1024:.1f} KB" in audit
    h, cc, ops_h = (tmp_path / f"seed_int8{s}" for s in (".h", ".cc", "_ops.h"))
    assert result["c_array"] == [str(h), str(cc), str(ops_h)] and "C source for firmware" in audit
    # The firmware's view: compiled and linked, the array is the file's bytes, aligned as TFLM needs.
    (tmp_path / "check.cc").write_text(
        '#include <cstdio>\n#include <cstdint>\n#include "seed_int8.h"\n'
        "int main() { std::printf(\"%u %d\\n\", seed_int8_len, int(reinterpret_cast<uintptr_t>(seed_int8) % 16));\n"
        "  std::fwrite(seed_int8, 1, seed_int8_len, stderr); return 0; }\n")
    build = subprocess.run(["g++", "-std=c++17", "-o", str(tmp_path / "check"), str(tmp_path / "check.cc"), str(cc)],
                           capture_output=True, text=True, cwd=str(tmp_path))
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(tmp_path / "check")], capture_output=True)
    length, misaligned = map(int, run.stdout.split())
    assert length == os.path.getsize(out) and misaligned == 0 and run.stderr == out.read_bytes()
    # The resolver registers exactly the model's ops.
    ops = sorted(set(TFLiteModel.from_file(str(out)).ops))
    text = ops_h.read_text()
    assert f"OpCount = {len(ops)};" in text and text.count("resolver.Add") == len(ops)
    assert all(f"resolver.{resolver_method(op)}()" in text for op in ops)
    assert resolver_method("CONV_2D") == "AddConv2D" and resolver_method("STRIDED_SLICE") == "AddStridedSlice"


def test_a_float_file_names_what_a_microcontroller_cannot_run(seed_files):
    from benchmarks.micro import micro_audit

    m = micro_audit(str(seed_files / "inv_f32.tflite"))
    assert "CONV_2D" in m["gaps"]["float"] and not m["gaps"]["flex"], m
