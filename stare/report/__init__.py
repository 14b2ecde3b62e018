"""Reports from run folders, with no model and no trainer: ``runs`` (folder layout, metrics records),
``aggregate`` (curves and final values over seeds, Welch tests), ``plots``, ``tables``, ``html``."""
