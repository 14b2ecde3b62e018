"""Reports: figures, tables and multi-seed comparisons read from metrics files (no model needed)."""
