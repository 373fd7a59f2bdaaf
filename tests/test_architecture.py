"""The architecture as an import graph: the base stands alone, the device side reaches no host code, and
packages form no cycle.

Imports are read from the source (every ``import`` statement, at module level or inside a function, since
a function-level import runs on the device too), so the check needs nothing installed.
"""

import ast
import os

import pytest
from conftest import ROOT

PACKAGES = ("invo_base", "involution", "convert", "quantize", "benchmarks")
# What the base may import besides the standard library: the device side installs these and a runtime only,
# whose package carries the .tflite schema's binding (ai-edge-litert's; beside tflite-runtime, the tflite reader).
BASE_DEPENDENCIES = ("numpy", "click", "flatbuffers", "invo_base", "ai_edge_litert.schema_py_generated", "tflite")
HOST_ONLY = ("tensorflow", "keras", "involution", "convert", "quantize", "benchmarks.host")


def project_modules(root, packages=PACKAGES):
    """{module name: file path} of every module of ``packages`` under ``root``."""
    out = {}
    for pkg in packages:
        for directory, _, files in os.walk(os.path.join(root, pkg)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(directory, f), root)[:-3].replace(os.sep, ".")
                    out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(directory, f)
    return out


def imports_of(path, modules):
    """Modules named by every import statement of a file (``from a import b`` is ``a.b`` when that is a module);
    no exceptions: a function-level import counts like any other."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
    return found


def import_graph(root, packages=PACKAGES):
    modules = project_modules(root, packages)
    return {m: imports_of(p, modules) for m, p in modules.items()}


def _within(name, prefixes):
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def device_side(graph):
    """invo-bench's modules and the base they stand on."""
    return [m for m in graph if _within(m, ("benchmarks", "invo_base")) and not _within(m, ("benchmarks.host",))]


def host_reached(graph, start):
    """{host-only module: the import chain that reaches it} from the device-side module ``start``."""
    chains, stack, seen = {}, [(start, [start])], {start}
    while stack:
        module, chain = stack.pop()
        for name in graph.get(module, ()):
            if _within(name, HOST_ONLY):
                chains.setdefault(name, chain + [name])
            elif name in graph and name not in seen:
                seen.add(name)
                stack.append((name, chain + [name]))
    return chains


def package_of(module):
    return "benchmarks.host" if _within(module, ("benchmarks.host",)) else module.split(".")[0]


def package_cycles(graph):
    """Cycles among the packages (benchmarks.host counted apart from the device side), as lists."""
    edges = {}
    for module, names in graph.items():
        for name in names:
            if name.split(".")[0] in PACKAGES and package_of(name) != package_of(module):
                edges.setdefault(package_of(module), set()).add(package_of(name))
    cycles = []

    def visit(node, path):
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif len(path) < 8:
                visit(nxt, path + [nxt])

    for node in sorted(edges):
        visit(node, [node])
    return cycles


def test_device_side_reaches_no_host_code():
    graph = import_graph(ROOT)
    device = device_side(graph)
    assert {"benchmarks.cli", "benchmarks.bench", "benchmarks.runtime", "invo_base.plumbing"} <= set(device)
    leaks = {m: host_reached(graph, m) for m in device}
    leaks = {m: chains for m, chains in leaks.items() if chains}
    assert not leaks, "\n".join(" -> ".join(chain) for chains in leaks.values() for chain in chains.values())


def test_device_side_never_imports_tensorflow():
    """No device-side module imports TensorFlow or Keras, at module level or in a function (the host CLIs'
    TensorFlow helpers live in involution.host_env)."""
    graph = import_graph(ROOT)
    for module in device_side(graph):
        assert not [n for n in graph[module] if _within(n, ("tensorflow", "keras"))], module


def test_the_base_imports_only_its_own_dependencies():
    """invo_base: the standard library, numpy, click, flatbuffers and the schema binding; no other package of the
    project."""
    import sys

    graph = import_graph(ROOT)
    for module in (m for m in graph if _within(m, ("invo_base",))):
        foreign = [n for n in graph[module] if n.split(".")[0] not in sys.stdlib_module_names
                   and not _within(n, BASE_DEPENDENCIES)]
        assert not foreign, (module, foreign)


def test_packages_form_no_cycle():
    assert package_cycles(import_graph(ROOT)) == []


def module_cycles(graph):
    """Groups of the project's modules that import each other, directly or round a loop (strongly connected
    components of the import graph, every import statement counted, function-level ones too)."""
    modules = set(graph)

    def module_of(name):  # "convert.export.to_tflite" -> "convert.export"
        while name and name not in modules:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name

    edges = {m: {module_of(n) for n in graph[m]} - {"", m} for m in graph}
    order, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        order[v] = low[v] = len(order)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in order:
            visit(v)
    return groups


def test_modules_form_no_cycle():
    """No two modules import each other, even inside functions: a lazy import hides a cycle, it does not
    break it."""
    assert module_cycles(import_graph(ROOT)) == []


def test_module_cycles_are_found(tmp_path):
    """The check finds a cycle that only function-level imports make."""
    write_package(tmp_path, {"convert/__init__.py": "", "convert/a.py": "def f():\n    from convert.b import g\n",
                             "convert/b.py": "def g():\n    from convert.a import f\n"})
    assert module_cycles(import_graph(str(tmp_path))) == [["convert.a", "convert.b"]]


def write_package(root, files):
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


@pytest.mark.parametrize("leak", ["import tensorflow", "from convert.api import convert_model",
                                  "from benchmarks.host import report"])
def test_the_checks_catch_a_leak_and_a_cycle(tmp_path, leak):
    """A device module that reaches host code through another module's function-level import, and a cycle."""
    write_package(str(tmp_path), {
        "benchmarks/__init__.py": "", "benchmarks/host/__init__.py": "", "benchmarks/host/report.py": "",
        "benchmarks/cli.py": "from benchmarks import bench\n",
        "benchmarks/bench.py": f"def f():\n    {leak}\n",
        "convert/__init__.py": "", "convert/api.py": "from benchmarks.bench import f\n",
        "involution/__init__.py": "", "quantize/__init__.py": "",
    })
    graph = import_graph(str(tmp_path))
    reached = host_reached(graph, "benchmarks.cli")
    assert reached and all(chain[:2] == ["benchmarks.cli", "benchmarks.bench"] for chain in reached.values()), reached
    cycles = package_cycles(graph)
    assert bool(cycles) == (leak.startswith("from convert")), cycles
