"""The lifecycle as a diagram, drawn from the machine supervisor.lifecycle builds, by transitions'
own diagram support: Mermaid always (it needs nothing else), SVG where Graphviz is installed.

Nothing here is a copy of the lifecycle table: a Lifecycle is constructed, and its states, initial
state and transitions (triggers, sources, destinations, guards) are read off the machine it made.
The Mermaid text is deterministic (the table's order, no timestamps), so fsm_diagrams/lifecycle.mmd
can be compared with it in a test. Imported only by `nsup diagram` and `nsupctl status --diagram`.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import SimpleNamespace

TITLE = "nsup lifecycle"
MERMAID_FILE = "lifecycle.mmd"
SVG_FILE = "lifecycle.svg"
GENERATED = "%% Generated from supervisor/lifecycle.py by `nsup diagram`; do not edit (a test compares them)."
HIGHLIGHT_STYLE = "active"  # transitions' style for the current state: classDef s_active in Mermaid


def lifecycle_mermaid(highlight: str | None = None) -> str:
    """The lifecycle as a Mermaid state diagram, guards on the edges ("flat [flat_is_verified]");
    `highlight`: a state to mark as the current one (classDef s_active), or None for none."""
    graph = _graph("mermaid", highlight)
    # transitions writes the title as the whole front matter; as `title: ...` it is valid YAML.
    lines = graph.get_graph(title=f"title: {TITLE}").source.splitlines()
    at = lines.index("stateDiagram-v2") + 1
    lines.insert(at, "  " + GENERATED)
    return "\n".join(line.rstrip() for line in lines) + "\n"


def svg_unavailable() -> str | None:
    """Why an SVG cannot be drawn on this machine, or None if it can."""
    if shutil.which("dot") is None:
        return "Graphviz's `dot` is not on PATH"
    if _graphviz_engine() is None:
        return "neither the `pygraphviz` nor the `graphviz` Python package is installed"
    return None


def lifecycle_svg(path: Path, highlight: str | None = None) -> str | None:
    """Draw the lifecycle as SVG to `path` with Graphviz; returns None when written, otherwise why
    not (Graphviz is optional: nothing is written then)."""
    reason = svg_unavailable()
    if reason is not None:
        return reason
    graph = _graph(_graphviz_engine(), highlight)
    Path(path).write_bytes(graph.get_graph(title=TITLE).draw(None, format="svg", prog="dot"))
    return None


def default_out_dir() -> Path:
    """fsm_diagrams/ of the checkout nsup runs from, or the current directory for an installed nsup."""
    in_repo = Path(__file__).resolve().parents[1] / "fsm_diagrams"
    return in_repo if in_repo.is_dir() else Path.cwd()


def write_generated(out_dir: Path) -> list[str]:
    """Regenerate the generated diagrams in `out_dir`; one line per file, written or skipped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mermaid = out_dir / MERMAID_FILE
    mermaid.write_text(lifecycle_mermaid())
    lines = [f"wrote {mermaid}"]
    svg = out_dir / SVG_FILE
    skipped = lifecycle_svg(svg)
    lines.append(f"wrote {svg}" if skipped is None else f"skipped {svg}: {skipped}")
    return lines


def _graph(graph_engine: str, highlight: str | None):
    """transitions' graph of a GraphMachine with the live lifecycle's states and transitions."""
    from transitions.extensions import GraphMachine

    from supervisor.lifecycle import Lifecycle

    live = Lifecycle(flat_interval_secs=0.0, on_transition=lambda *_: None)._machine
    if highlight is not None and highlight not in live.states:
        raise ValueError(f"unknown lifecycle state {highlight!r}")
    transitions = []
    for event in live.events.values():
        for source_transitions in event.transitions.values():
            for t in source_transitions:
                guards = {"conditions": [c.func for c in t.conditions if c.target],
                          "unless": [c.func for c in t.conditions if not c.target]}
                transitions.append({"trigger": event.name, "source": t.source, "dest": t.dest,
                                    **{k: v for k, v in guards.items() if v}})
    model = SimpleNamespace()  # only to hold the state the drawing machine needs; it is never fired
    machine = GraphMachine(model=model, states=list(live.states), initial=live.initial, transitions=transitions,
                           auto_transitions=False, show_conditions=True, graph_engine=graph_engine, title=TITLE)
    graph = machine.model_graphs[id(model)]
    graph.reset_styling()  # transitions marks the model's (initial) state active; only `highlight` is
    if highlight is not None:
        graph.set_node_style(highlight, HIGHLIGHT_STYLE)
    return graph


def _graphviz_engine() -> str | None:
    for engine in ("pygraphviz", "graphviz"):
        if importlib.util.find_spec(engine) is not None:
            return engine
    return None
