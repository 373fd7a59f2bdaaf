"""invo-report deployment, run for real on the briefly trained seed models (few runs, two rounds)."""

import json
import os

import pytest

from conftest import assert_one_line_error, invoke_cli, run_cli

from benchmarks.host.cli import main as report_cli


def test_deployment_report_from_a_training_directory(trained_seed, tmp_path):
    out, results = trained_seed
    report_dir = tmp_path / "report"
    proc = invoke_cli(report_cli, "deployment", "--train-dir", out, "--out", report_dir,
                      "--num-runs", "5", "--rounds", "2", "--no-gpu-check")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((report_dir / "report.json").read_text())
    rows = {(r["model"], r["dtype"]): r for r in report["rows"]}
    assert set(rows) == {(m, d) for m in ("seed-conv", "seed-involution") for d in ("float32", "int8")}
    for (model, dtype), r in rows.items():
        assert r["file_kb"] * 1024 == os.path.getsize(r["file"])
        # Every validation sample of the fixed split, and Keras's top-1 there is the one training reported.
        assert r["validation_samples"] == 359 and abs(r["top1_keras"] - results[model]["val_accuracy"]) < 1e-6
        if dtype == "float32":
            assert r["top1"] == r["top1_keras"]
        t1 = r["cpu_1t"]  # two rounds: their median is their mean, between them
        assert t1["min"] <= t1["median"] <= t1["max"] and t1["median"] == r["cpu_1t_ms"]
        assert t1["median"] == pytest.approx((t1["min"] + t1["max"]) / 2)
        assert r["gpu"] == "no GPU" and r["gpu_ms"] is None
    text = (report_dir / "report.md").read_text()
    assert proc.stdout.strip() == text.strip()
    conv, inv = rows["seed-conv", "float32"], rows["seed-involution", "float32"]
    # The size ratio is the files' own, read from disk, not the report's figures.
    assert f"{os.path.getsize(inv['file']) / os.path.getsize(conv['file']):.3f}x float32" in text
    for trust in report["trust"]:
        assert "error" not in trust, trust
    for png in ("latency.png", "size.png"):
        assert (report_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_deployment_report_names_a_wrong_training_directory(tmp_path):
    proc = run_cli("benchmarks.host.cli", "deployment", "--train-dir", str(tmp_path), "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "seed-conv", "invo-train --compare")
    proc = run_cli("benchmarks.host.cli", "deployment", "--num-runs", "0")
    assert proc.returncode == 2 and "--num-runs must be at least 1" in proc.stderr
