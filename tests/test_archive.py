"""experiments/archive_results.py keeps the archive free of the paths of the machine that made the runs."""

import importlib.util
from pathlib import Path


def _archive_module():
    path = Path(__file__).resolve().parents[1] / "experiments" / "archive_results.py"
    spec = importlib.util.spec_from_file_location("archive_results", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_portable_cuts_absolute_paths_at_runs():
    portable = _archive_module().portable
    text = ("output_dir: /home/u/wt/runs/ee/explore_on/siren/seed_0\n"
            "`stare compare c.yaml --out /srv/x/runs/ee/explore_on --workers 2`\n"
            "output_dir: runs/study/grpo_ds/seed_0\n"
            "python: /usr/bin/python3, a/runs/b stays\n"
            '"config": "/opt/venv/lib/python3.11/site-packages/stare/configs/testbed.yaml"\n')
    assert portable(text) == ("output_dir: runs/ee/explore_on/siren/seed_0\n"
                              "`stare compare c.yaml --out runs/ee/explore_on --workers 2`\n"
                              "output_dir: runs/study/grpo_ds/seed_0\n"
                              "python: /usr/bin/python3, a/runs/b stays\n"
                              '"config": "stare/configs/testbed.yaml"\n')
