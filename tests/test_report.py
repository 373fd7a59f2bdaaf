"""invo-report deployment, run for real on the briefly trained seed models (few runs, two rounds)."""



from conftest import assert_one_line_error, run_cli



def test_deployment_report_names_a_wrong_training_directory(tmp_path):
    proc = run_cli("benchmarks.host.cli", "deployment", "--train-dir", str(tmp_path), "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "seed-conv", "invo-train --compare")
    proc = run_cli("benchmarks.host.cli", "deployment", "--num-runs", "0")
    assert proc.returncode == 2 and "--num-runs must be at least 1" in proc.stderr
