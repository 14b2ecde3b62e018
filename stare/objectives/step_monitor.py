"""``StepMonitor``: step-level diagnostics of a method whose math lives in a step hook.

An advantage or reward hook returns a tensor and nothing else, so the numbers that say what it did this
step (EMPG's modulation range, the majority share of TTRL's vote, SEED-GRPO's semantic entropy) have no
way into the logs. The controller interface is the trainer's channel for step-level metrics: it is
updated with the same ``StepData`` just before the advantage hook runs. A ``StepMonitor`` uses it and
nothing more: ``state()`` is empty (the loss and the hooks never read it), nothing crosses from one
step to the next, and ``metrics()`` is what ``measure`` found for the current step. Given a step that
lacks what ``measure`` reads (an engine that fills only ``batch_entropy``) it reports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .contract import ControllerState, StepData

__all__ = ["StepMonitor"]


@dataclass
class StepMonitor(ControllerState):
    """Subclasses set ``reads`` (the ``StepData`` fields ``measure`` needs) and define ``measure``."""

    params: Any = None
    last: dict = field(default_factory=dict)
    reads: ClassVar[tuple[str, ...]] = ()

    def measure(self, data: StepData) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, data: StepData) -> None:
        try:
            data.require(type(self).__name__, *self.reads)
        except ValueError:
            self.last = {}
            return
        self.last = {k: float(v) for k, v in self.measure(data).items()}

    def state(self) -> dict:
        return {}

    def metrics(self) -> dict[str, float]:
        return dict(self.last)
