"""The dashboard's panels drawn from real data, for the README (docs/dashboard.png).

Grafana is not packaged for Debian, so this draws what deploy/grafana/nsup-dashboard.json's queries
return, with matplotlib, from a real Prometheus that scraped two real nsup nodes through a scripted
session:

  desk-a  the demo node, trading; its worker is killed (kill -9) and replaced; later the graceful stop
  desk-b  a node whose venue refuses every closing order; asked to stop, it stays HALTING, stuck

    .venv/bin/pip install 'matplotlib>=3.8,<4'        (for this script only; not a dependency of nsup)
    .venv/bin/python scripts/dashboard_picture.py [--out docs/dashboard.png] [--minutes 3]

Needs Debian's prometheus (scripts/test installs it). Takes about --minutes plus half a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.deploy_files import RULES, dashboard, dashboard_queries, expand_grafana  # noqa: E402
from tests.prometheus_server import PrometheusServer  # noqa: E402
from tests.redis_server import free_port  # noqa: E402

NODES = {
    "desk-a": {"hold_secs": 20.0, "flat_secs": 8.0},
    "desk-b": {"hold_secs": 3600.0, "flat_secs": 0.0, "reject_reduce_only": True, "exit_max_attempts": 5},
}
COLORS = {"green": "#56a64b", "light-green": "#96d98d", "orange": "#ff9830", "red": "#e02f44", "blue": "#3274d9",
          "light-blue": "#8ab8ff", "purple": "#a352cc", "text": "#8e8e8e"}


class Node:
    def __init__(self, name: str, params: dict, root: Path):
        self.name, self.port = name, free_port()
        self.state_dir = root / name
        run_dir = Path(tempfile.mkdtemp(prefix=f"nsup-{name}-"))
        config = root / f"{name}.toml"
        config.write_text("\n".join([
            "[node]", 'factory = "node_worker.demo.node:demo_node"',
            "params = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in {"venue": "sandbox", **params}.items()) + " }",
            "[supervisor]", f'state_dir = "{self.state_dir}"', f'run_dir = "{run_dir}"', "flatten_rounds = 2",
            "flatten_round_wait_secs = 5.0", "heartbeat_interval_secs = 0.5",
            "[metrics]", f'listen = "127.0.0.1:{self.port}"', ""]))
        self.process = subprocess.Popen([sys.executable, "-m", "supervisor", "run", "--config", str(config)], cwd=REPO,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def records(self, kind: str) -> list[dict]:
        path = self.state_dir / "journal.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [r for r in map(json.loads, filter(None, lines)) if r["kind"] == kind]

    def wait_for(self, kind: str, field: str | None = None, value=None, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(field is None or r.get(field) == value for r in self.records(kind)):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"dashboard_picture: {self.name} never journaled {kind} {field}={value}")
            time.sleep(0.2)

    def end(self) -> None:
        """The script's own teardown: nsup first, then any worker it leaves (desk-b stays stuck)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for record in self.records("worker_spawned"):
            try:
                os.kill(record["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


def session(minutes: float, nodes: dict[str, Node]) -> None:
    """The scripted story, paced over `minutes`."""
    a, b = nodes["desk-a"], nodes["desk-b"]
    for node in nodes.values():
        node.wait_for("transition", "dest", "RUNNING")
    beat = minutes * 60 / 6
    time.sleep(beat)
    os.kill(a.records("worker_spawned")[-1]["pid"], signal.SIGKILL)  # a lost worker: RECOVERING, then RUNNING again
    a.wait_for("transition", "source", "RECOVERING")
    time.sleep(beat * 1.5)
    b.process.send_signal(signal.SIGTERM)  # desk-b cannot be flattened: HALTING, stuck
    b.wait_for("halt_stuck")
    time.sleep(beat * 1.5)
    a.process.send_signal(signal.SIGTERM)  # the graceful stop: flat, stopped, nsup exits
    a.wait_for("transition", "dest", "STOPPED")
    time.sleep(beat)


def draw(prometheus: PrometheusServer, start: float, end: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    board = {p["title"]: p for p in dashboard()["panels"]}
    queries = {}
    for title, expr in dashboard_queries():
        queries.setdefault(title, []).append(expand_grafana(expr))
    step = max(1.0, (end - start) / 400)

    def series(expr: str) -> list[tuple[dict, list[float], list[float]]]:
        return [(r["metric"], [float(t) - start for t, _ in r["values"]], [float(v) for _, v in r["values"]])
                for r in prometheus.query_range(expr, start, end, step)]

    timelines = ["Lifecycle state", "Trading state", "Health"]
    fig, axes = plt.subplots(6, 1, figsize=(13, 14), gridspec_kw={"height_ratios": [1.3, 1.3, 1.3, 2, 1.6, 1.6]})
    fig.suptitle("nsup dashboard (deploy/grafana/nsup-dashboard.json), drawn from a real Prometheus", fontsize=13)
    names = sorted(NODES)
    for ax, title in zip(axes, timelines):
        mapping = board[title]["fieldConfig"]["defaults"]["mappings"][0]["options"]
        legend = {}
        for metric, t, v in series(queries[title][0]):
            row = names.index(metric.get("node"))
            for i, (ti, vi) in enumerate(zip(t, v)):
                mapped = mapping.get(str(int(vi)))
                if mapped is None:
                    continue
                width = (t[i + 1] - ti) if i + 1 < len(t) and t[i + 1] - ti <= 2 * step else step
                color = COLORS.get(mapped["color"], mapped["color"])
                ax.barh(row, width, left=ti, height=0.7, color=color, linewidth=0)
                legend[mapped["text"]] = color
        ax.set_yticks(range(len(names)), names)
        ax.set_xlim(0, end - start)
        ax.set_title(title, loc="left", fontsize=11)
        ax.legend(handles=[Patch(color=c, label=n) for n, c in legend.items()], loc="upper left", bbox_to_anchor=(1.0, 1.0),
                  fontsize=8, frameon=False)
    line_panels = [("Open positions and orders", 3), ("Heartbeat age", 4), ("Worker restarts", 5)]
    for title, index in line_panels:
        ax = axes[index]
        for expr, target in zip(queries[title], board[title]["targets"]):
            for metric, t, v in series(expr):
                label = target["legendFormat"].replace("{{node}}", metric.get("node", "?"))
                ax.step(t, v, where="post", label=label)
        for step_ in board[title]["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])[1:]:
            ax.axhline(step_["value"], color=COLORS.get(step_["color"], step_["color"]), linestyle="--", linewidth=1)
        ax.set_xlim(0, end - start)
        ax.set_title(title, loc="left", fontsize=11)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    axes[-1].set_xlabel("seconds into the session")
    firing = sorted({f"{a['labels']['alertname']} ({a['labels'].get('node')})" for a in prometheus.alerts() if a["state"] == "firing"})
    fig.text(0.01, 0.005, "Alerts firing at the end: " + (", ".join(firing) or "none"), fontsize=10)
    fig.tight_layout(rect=(0, 0.02, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    parser.add_argument("--minutes", type=float, default=3.0)
    args = parser.parse_args()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("dashboard_picture: needs matplotlib: .venv/bin/pip install 'matplotlib>=3.8,<4'", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="nsup-dashboard-"))
    nodes = {name: Node(name, params, root) for name, params in NODES.items()}
    prometheus = PrometheusServer(root / "prometheus", {f"127.0.0.1:{n.port}": {"node": name} for name, n in nodes.items()},
                                  [RULES], interval="1s").start()
    start = time.time()
    try:
        session(args.minutes, nodes)
        end = time.time()
        draw(prometheus, start, end, args.out)
    finally:
        for node in nodes.values():
            node.end()
        prometheus.stop()
    print(f"dashboard_picture: {args.out} ({end - start:.0f} s of data)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
