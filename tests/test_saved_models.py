"""What a user builds and saves converts the next day: every model the library builds, saved in every format a
user has, is converted by the installed ``invo-convert`` in a fresh process and gives the outputs the model gave
before it was saved.  (invo-train's own model.keras: tests/test_readme.py runs the README's invo-train and
invo-convert commands.)"""

import ast
import os
import subprocess
import sys

import pytest
from conftest import BIN, ROOT, assert_gives_saved_outputs, user_env

from involution.catalog import MODEL_NAMES
from involution.serializable import MODULES

# RedNet-38, -50, -101 and -152 are RedNet-26 with more blocks per stage, of the same classes and shapes;
# converting them takes 30-120 s each on 2 cores, so they are loaded back in a fresh process and checked
# against their saved outputs instead (test_every_saved_model_loads_in_a_fresh_process).  rednet26.keras is
# converted the same way, for the GPU target, in tests/test_gpu_target.py.
CONVERTED = ["seed-conv.keras", "seed-involution.keras", "seed-involution.h5", "seed-involution_savedmodel",
             "rednet-cifar.keras", "rednet-cifar_savedmodel", "rednet26.h5", "layers.keras", "layers.h5"]
LOADED_ONLY = ["rednet38.keras", "rednet50.keras", "rednet101.keras", "rednet152.keras"]
CONVERTED_FOR_THE_GPU = ["rednet26.keras"]  # tests/test_gpu_target.py




@pytest.mark.parametrize("file", CONVERTED)
def test_saved_model_converts_in_a_fresh_process(saved, tmp_path, file):
    out = tmp_path / "m.tflite"
    proc = subprocess.run([os.path.join(BIN, "invo-convert"), str(saved / file), "-o", str(out), "--no-gpu-check",
                           "--quiet"], capture_output=True, text=True, timeout=600, cwd=str(tmp_path), env=user_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_gives_saved_outputs(saved, file, out)


def test_every_saved_model_loads_in_a_fresh_process(saved):
    """invo-convert's loader, alone in a new interpreter, reads back every file, and each model gives the outputs
    it gave before saving; the list above names every file the saving script writes."""
    files = sorted(p.name for p in saved.iterdir() if not p.name.endswith(".npz"))
    assert set(files) == set(CONVERTED + LOADED_ONLY + CONVERTED_FOR_THE_GPU) and {f"{n}.keras" for n in MODEL_NAMES} <= set(files), files
    code = ("import sys, numpy as np\nfrom convert.load import load_model\n"
            "for f in sys.argv[2:]:\n"
            "    name = f.rsplit('.', 1)[0].removesuffix('_savedmodel')\n"
            "    d = np.load(f'{sys.argv[1]}/{name}_expected.npz')\n"
            "    model, kind = load_model(f'{sys.argv[1]}/{f}')\n"
            "    got = np.asarray(model(d['x'], training=False))\n"
            "    err = float(np.abs(got - d['y']).max() / np.abs(d['y']).max())\n"
            "    print(f, kind, err)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(saved), *files], capture_output=True, text=True,
                          timeout=600, cwd=str(saved), env=user_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = {line.split()[0]: float(line.split()[2]) for line in proc.stdout.splitlines()}
    assert set(errors) == set(files) and all(e < 1e-5 for e in errors.values()), errors


def _registering_modules():
    """{module: class names} of every class in the package decorated with register_keras_serializable."""
    found = {}
    for folder in ("involution", "convert", "quantize", "benchmarks", "invo_base"):
        for dirpath, _, names in os.walk(os.path.join(ROOT, folder)):
            for n in names:
                if not n.endswith(".py"):
                    continue
                path = os.path.join(dirpath, n)
                tree = ast.parse(open(path).read())
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                for node in ast.walk(tree):
                    if isinstance(node, ast.ClassDef) and any("register_keras_serializable" in ast.unparse(d)
                                                              for d in node.decorator_list):
                        found.setdefault(module, []).append(node.name)
    return found


def test_the_loader_knows_every_registered_class():
    """A class registered anywhere in the package but missing from involution.serializable would load in a test
    process that happened to import it and fail in a user's fresh one: the list must be the decorators'."""
    assert {m: sorted(c) for m, c in _registering_modules().items()} == {m: sorted(c) for m, c in MODULES.items()}


def test_the_package_exports_what_the_readme_shows():
    """``import involution; involution.Subsample2D`` and every other registered class, without naming modules."""
    code = ("import involution\n"
            f"print(sorted(c.__name__ for c in (getattr(involution, n) for n in {sorted(n for ns in MODULES.values() for n in ns)!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=user_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[0] == str(sorted(n for ns in MODULES.values() for n in ns))
