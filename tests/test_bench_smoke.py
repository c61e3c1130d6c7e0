"""A few seconds of the benchmark, so the harness cannot rot (figures not judged)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_benchmark_smoke_run_produces_every_figure():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "accept throughput / bare" in done.stdout
    results = json.loads((ROOT / "bench" / "results" / "smoke.json").read_text())
    assert results["settings"]["smoke"] is True
    assert results["load_errors"] == 0
    for key in (
        "accept_throughput_ratio",
        "accept_p99_ratio",
        "slow_relay_ratio",
        "delivery_ratio",
        "web_worker_rss_mb",
        "delivery_worker_rss_mb",
    ):
        assert results["ratios"][key] > 0, key
    assert results["drain"]["messages"] > 0


def test_commit_floor_measures_every_setting():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "commit_floor.py"), "--rows", "100"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    settings = [(r[0], r[1]) for r in rows]
    assert settings == [("1", "1"), ("4", "1"), ("4", "4"), ("4", "8")]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)


def test_request_path_measures_every_row():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "request_path.py"), "--requests", "80"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = done.stdout.splitlines()[1:]
    assert len(rows) == 4, done.stdout
    assert all(float(row.split()[-1]) > 0 for row in rows), done.stdout
