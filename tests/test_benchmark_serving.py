"""benchmarks/serving.py runs end to end (`--quick`) and reports its JSON.

This is a smoke test of the script, not a timed test: the figures are not
compared with the targets here (BENCHMARKS.md records a full run).
"""

import json
import math
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "benchmarks", "serving.py")
KEYS = ("savedmodel_p50_ms", "keras_p50_ms", "latency_ratio",
        "savedmodel_eps_b64", "keras_eps_b64", "throughput_ratio")


def run(*args, timeout=900):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, SCRIPT, *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_serving_benchmark_quick(shared_data, tmp_path):
    proc = run("--quick", "--data", str(shared_data), "--cache",
               str(tmp_path / "cache"), "--requests", "20", "--batches", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    for key in KEYS:
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert math.isclose(result["latency_ratio"],
                        result["savedmodel_p50_ms"] / result["keras_p50_ms"],
                        rel_tol=1e-2, abs_tol=1e-3)
    assert math.isclose(result["throughput_ratio"],
                        result["savedmodel_eps_b64"]
                        / result["keras_eps_b64"],
                        rel_tol=1e-2, abs_tol=1e-3)
    # The SavedModel on raw bytes and Keras on Pillow / wave / NumPy inputs
    # give the same predictions.
    assert result["max_abs_diff"] < 1e-4
    table = [line for line in lines if line.startswith("|")]
    assert table[0].startswith("| path") and len(table) == 5
    # The temporary export folder is removed.
    assert not any(name.startswith("serving_export_")
                   for name in os.listdir(tmp_path / "cache"))


def test_serving_benchmark_without_data_exits_cleanly(tmp_path):
    proc = run("--quick", "--data", str(tmp_path / "absent"), timeout=120)
    assert proc.returncode == 0
    assert "SKIPPED" in proc.stdout and "absent" in proc.stdout
