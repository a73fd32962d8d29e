"""The benchmark suite still runs end to end (`bench/run.py --quick`).

Benchmarks are not tests: nothing here asserts a speed. This only keeps the one command from
rotting as the code under it changes — every measure and every target row must come out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_run_produces_every_measure(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert not result["errors"], result["errors"]
    reference = json.loads((ROOT / "bench" / "results" / "reference.json").read_text())
    assert set(result["measures"]) == set(reference["measures"])
    assert [t["target"] for t in result["targets"]] == [t["target"] for t in reference["targets"]]
    for target in result["targets"]:
        assert target["result"] in ("PASS", "MISS")
        assert target["ratio"] > 0, target
    assert "ratio" in run.stdout  # the table was printed
