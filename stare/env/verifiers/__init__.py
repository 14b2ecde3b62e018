"""Verifiers with time limits: ``math`` (math-verify in worker processes, never ``eval``)."""
