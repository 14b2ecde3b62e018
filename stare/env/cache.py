"""Where built artefacts are cached: the testbed's base model, SmolLM2 converted from GGUF.

``$STARE_CACHE`` when set, else ``~/.cache/stare``. Each artefact lives in a folder named by the hash
of what defines it and is written under a temporary name, then renamed, so a folder that exists is
complete.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    return Path(os.environ.get("STARE_CACHE", Path.home() / ".cache" / "stare"))
