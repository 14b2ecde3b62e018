"""Tools for multi-turn tasks: a Python-syntax calculator (our own interpreter, no eval) and the
sandbox that runs it in a resource-limited process."""

from .sandbox import CALCULATOR, Sandbox

__all__ = ["CALCULATOR", "Sandbox"]
