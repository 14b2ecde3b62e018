"""benchmarks/gpu_check.sh in its reduced CPU mode (--cpu-smoke): every section runs and writes its figures
(the same code paths as on a GPU, at toy sizes). About 17 s of CPU time."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_smoke(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "STARE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-smoke", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["mode"] == "cpu-smoke" and result["errors"] == {}
    sec = result["sections"]
    assert sec["env"]["device"] == "cpu" and sec["env"]["packages"]["transformers"]
    stats = sec["token_stats"]["results"]
    assert [r["dtype"] for r in stats] == ["bfloat16", "float32"]
    for r in stats:
        for key in ("fwd", "fwd+bwd"):
            assert all(v > 0 and math.isfinite(v) for v in r["bound_ratio"][key].values())
        acc = r["accuracy"]
        assert acc["after"]["entropy"] < (1e-4 if r["dtype"] == "float32" else 0.1)
    tb = sec["testbed"]
    assert tb["steps"] == 2 and tb["median_step_s"] > 0 and tb["median_update_s"] > 0
    assert 0 <= tb["last_entropy"] and "val/acc/mean@2" in tb["val"]
    assert (out / "testbed" / "metrics.jsonl").is_file() and (out / "testbed" / "config.yaml").is_file()
    cases = sec["rollout"]["cases"]
    assert [c["model"] for c in cases] == ["testbed", "tiny-llama"] and all(c["hf_tokens_per_s"] > 0 for c in cases)
    summary = (out / "summary.txt").read_text()
    assert "fwd / matmul bound" in summary and "testbed run (2 steps, cpu)" in summary and "HF generate" in summary
    # model folders and caches stay out of the output folder (it comes back from the GPU machine)
    assert sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) < 5 * 2**20
