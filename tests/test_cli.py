"""Every command line: --help without TensorFlow, inputs checked before outputs, host tools on a board."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT, assert_one_line_error, legacy_python, run_cli

HOST_CLIS = ["convert.cli", "quantize.cli", "involution.cli", "benchmarks.host.cli"]


@pytest.mark.parametrize("module", HOST_CLIS + ["benchmarks.cli"])
def test_help_imports_no_tensorflow(module):
    """TensorFlow takes seconds to import: --help must not need it (it is imported after parsing)."""
    code = (f"import sys\nsys.argv = ['prog', '--help']\nimport {module} as m\n"
            "try:\n    m.main()\nexcept SystemExit:\n    pass\n"
            "print('TF-IMPORTED' if 'tensorflow' in sys.modules or 'keras' in sys.modules else 'TF-FREE')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and proc.stdout.strip().endswith("TF-FREE"), proc.stdout[-300:]


@pytest.mark.parametrize("module,args", [("convert.cli", ["m.keras"]), ("quantize.cli", ["debug", "m.keras", "--calib", "digits"]),
                                         ("involution.cli", ["--epochs", "1"]),
                                         ("benchmarks.host.cli", ["networks", "--rounds", "1"])])
def test_host_tools_on_a_board_say_what_to_install(tmp_path, module, args):
    """The legacy venv (tflite-runtime, no TensorFlow): one Error line naming the host extras, no traceback."""
    python = legacy_python()
    (tmp_path / "m.keras").write_bytes(b"PK")
    argv = [str(tmp_path / a) if a.endswith(".keras") else a for a in args]
    proc = subprocess.run([python, "-m", module, *argv], capture_output=True, text=True, cwd=str(tmp_path), timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert_one_line_error(proc, "needs TensorFlow", "pip install")


def test_the_input_is_checked_before_the_output(tmp_path):
    """A missing input is the cause even when the output directory is missing too; a .tflite input is named."""
    proc = run_cli("convert.cli", str(tmp_path / "missing.keras"), "-o", str(tmp_path / "nodir" / "x.tflite"))
    assert_one_line_error(proc, "missing.keras: no such file")
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 32)
    proc = run_cli("convert.cli", str(tmp_path / "m.tflite"))  # a .tflite is reordered: this one is no model
    assert_one_line_error(proc, "m.tflite", "corrupt")
    assert not (tmp_path / "m.invo.tflite").exists()


def test_train_and_quantize_check_their_input_first(tmp_path):
    """An existing output without --force is not the error when the input is missing."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_text("x")
    proc = run_cli("involution.cli", "--dataset", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "out"),
                   "--epochs", "1")
    assert_one_line_error(proc, "missing.npz")
    (tmp_path / "o.tflite").write_bytes(b"x")
    proc = run_cli("quantize.cli", "selective", str(tmp_path / "missing.keras"), "-o", str(tmp_path / "o.tflite"),
                   "--calib", "digits", "--keep-op", "MUL")
    assert_one_line_error(proc, "missing.keras: no such file")


@pytest.mark.parametrize("module,argv,needle", [
    ("convert.cli", ["missing.keras"], "no such file"),
    ("convert.cli", ["notes.txt"], "not a Keras model"),
    ("convert.cli", ["m.tflite", "--quantize", "int8"], "already a .tflite file"),
    ("convert.cli", ["m.tflite"], "corrupt"),
    ("convert.cli", ["m.keras", "--quantize", "int8", "--calib", "nowhere/"], "no such file or folder"),
    ("quantize.cli", ["evaluate", "m.tflite", "m.keras", "--data", "digits"], "swapped"),
    ("quantize.cli", ["debug", "m.keras", "--calib", "typo"], "not a dataset name"),
    ("quantize.cli", ["selective", "m.keras", "-o", "m.tflite", "--calib", "digits", "--keep-op", "MUL"], "exists"),
    ("involution.cli", ["--dataset", "typo"], "not a dataset name"),
    ("involution.cli", ["--model", "rednet27"], "unknown --model"),
    ("benchmarks.host.cli", ["deployment", "--train-dir", "nowhere"], "invo-train --compare"),
])
def test_argument_errors_come_before_tensorflow(tmp_path, module, argv, needle):
    """A wrong path, file type or swapped argument is named without importing TensorFlow (seconds saved)."""
    (tmp_path / "m.keras").write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip: what model_kind calls .keras
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 32)
    (tmp_path / "notes.txt").write_text("not a model")
    code = ("import sys\nimport %s as m\nsys.argv = ['prog'] + %r\n"
            "try:\n    m.main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('TF-IMPORTED' if 'tensorflow' in sys.modules else 'TF-FREE', code)") % (module, argv)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path), timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.stdout.strip().endswith("TF-FREE 1"), proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr


def test_options_objects_name_an_unknown_field_in_their_tools_error():
    """ConvertOptions, BenchOptions and TrainOptions: a misspelt keyword is an error naming it, never ignored."""
    from benchmarks.bench import BenchOptions
    from convert.errors import ConversionError
    from convert.options import ConvertOptions
    from involution.train import TrainError, TrainOptions

    for cls, error in ((ConvertOptions, ConversionError), (BenchOptions, ValueError), (TrainOptions, TrainError)):
        with pytest.raises(error, match="unknown .*option\\(s\\): num_thread"):
            cls.of(num_thread=2)
    base = ConvertOptions(quantize="int8", calib="digits")
    assert ConvertOptions.of(base, io="uint8") == ConvertOptions(quantize="int8", calib="digits", io="uint8")
    assert BenchOptions.of(num_threads=2).num_runs == BenchOptions().num_runs
