"""Importing ``stare`` (or ``stare.integrations``) must not import a training framework."""

import subprocess
import sys


def test_import_stare_imports_no_framework():
    code = ("import sys, stare, stare.integrations; "
            "loaded = [m for m in ('verl', 'trl', 'transformers', 'accelerate', 'ray') if m in sys.modules]; "
            "assert not loaded, loaded")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
