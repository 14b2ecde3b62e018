"""The import graph of the package, read from the source (every ``import``, lazy ones inside functions
included): no cycle between modules or between the package's rooms, the core imports nothing above it,
the environment wing's rooms import one way only, and ``report`` reads run folders without the trainer.

Rooms: the core (the modules at the root and ``objectives``), ``env`` (whose own rooms are its leaf
modules and its sub-packages), ``train``, ``report``, ``integrations`` and ``cli``.
"""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "stare"


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The stare modules ``path`` imports, resolved to module names (``from x import y`` counts x.y when
    x.y is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "stare")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "stare":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in MODULES else target)
    return {m for m in out if m in MODULES and m != name}


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}
GRAPH = {m: imports_of(p) for m, p in MODULES.items()}

CORE = {"stare", "stare.stats", "stare.lm", "stare.advantages", "stare.surrogate", "stare.selection", "stare.theory",
        "stare.metrics", "stare.checks", "stare.inert", "stare.debug"}


def room(module: str) -> str:
    parts = module.split(".")
    if module in CORE or (len(parts) > 1 and parts[1] == "objectives"):
        return "core"
    return parts[1]


def env_room(module: str) -> str:
    """The room of a module inside ``stare.env``: its sub-package, or the leaf module itself."""
    parts = module.split(".")
    return ".".join(parts[:3]) if len(parts) > 2 else module


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        state[n] = "done"
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def collapse(key) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m, deps in GRAPH.items():
        a = key(m)
        if a is None:
            continue
        for d in deps:
            b = key(d)
            if b is not None and b != a:
                out.setdefault(a, set()).add(b)
    return out


def test_no_module_imports_itself_in_a_circle():
    assert find_cycle({m: {d for d in deps if d != "stare"} for m, deps in GRAPH.items()}) is None


def test_no_circle_between_rooms():
    assert find_cycle(collapse(room)) is None


def test_the_core_imports_nothing_above_it():
    above = {m: sorted(d for d in deps if room(d) != "core") for m, deps in GRAPH.items() if room(m) == "core"}
    assert {m: d for m, d in above.items() if d} == {}


def test_the_environment_wing_imports_one_way_and_never_upward():
    env = {m: deps for m, deps in GRAPH.items() if room(m) == "env"}
    upward = {m: sorted(d for d in deps if room(d) not in ("env", "core")) for m, deps in env.items()}
    assert {m: d for m, d in upward.items() if d} == {}
    inner = collapse(lambda m: env_room(m) if room(m) == "env" and m != "stare.env" else None)
    assert find_cycle(inner) is None, inner


@pytest.mark.parametrize("room_name, allowed", [
    ("report", {"report"}),  # reads run folders: no trainer, no model, no core
    ("integrations", {"integrations", "core"}),
    ("train", {"train", "core", "env", "report"}),
])
def test_rooms_import_only_what_they_may(room_name, allowed):
    bad = {m: sorted(d for d in deps if room(d) not in allowed)
           for m, deps in GRAPH.items() if room(m) == room_name}
    assert {m: d for m, d in bad.items() if d} == {}


def test_the_graph_is_read_at_all():
    # guards the checks above against vacuity: known edges are seen
    assert "stare.objectives.contract" in GRAPH["stare.objectives.stare"]
    assert "stare.env.procpool" in GRAPH["stare.env.verifiers.math"]
    assert "stare.train.trainer" in GRAPH["stare.train.scheduler"]  # a lazy import inside a function
    assert len(MODULES) > 60
