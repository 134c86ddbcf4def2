"""What the files under deploy/ say, read the way their own tools read them: the Containerfile's
instructions, the compose file, the Kubernetes manifests as kustomize renders them, the dashboard's
and the alerting rules' queries and the metric names in them. Shared by the unit and e2e tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
CONTAINERFILE = DEPLOY / "container" / "Containerfile"
NSUP_READY = DEPLOY / "container" / "nsup-ready"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
COMPOSE_CONFIG = DEPLOY / "compose" / "nsup.toml"
KUBERNETES = DEPLOY / "kubernetes"
KUSTOMIZE_EXAMPLE = KUBERNETES / "overlays" / "example"
DASHBOARD = DEPLOY / "grafana" / "nsup-dashboard.json"
RULES = DEPLOY / "prometheus" / "nsup-rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "nsup-rules.test.yml"

# Grafana's variables, as a test evaluates the dashboard's queries against a real Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$node": ".*"}
# Names in a PromQL expression that are not metrics: functions, keywords, aggregation clauses.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "increase", "rate", "irate", "delta", "max_over_time", "min_over_time", "sum_over_time", "absent",
    "bool", "offset",
}


# The Containerfile ----------------------------------------------------------------------------------

def containerfile_stages(path: Path = CONTAINERFILE) -> list[list[tuple[str, str]]]:
    """[(INSTRUCTION, rest of the line)] per build stage (from its FROM on; the ARGs before the first FROM
    are left out), continuation lines joined, comments dropped."""
    stages: list[list[tuple[str, str]]] = [[]]
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        logical += (" " if logical else "") + line.removesuffix("\\").strip()
        if line.endswith("\\"):
            continue
        instruction, _, rest = logical.partition(" ")
        logical = ""
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return [stage for stage in stages if stage and stage[0][0] == "FROM"]


def exec_form(rest: str) -> list[str] | None:
    """The argument list of an exec-form instruction (a JSON array), or None for the shell form."""
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def healthcheck_command(stage: list[tuple[str, str]]) -> tuple[dict[str, str], list[str] | None]:
    """HEALTHCHECK's options ({"--interval": "30s", ...}) and its CMD in exec form (None: shell form)."""
    rest = next(rest for instruction, rest in stage if instruction == "HEALTHCHECK")
    options = dict(re.findall(r"(--[a-z-]+)=(\S+)", rest))
    cmd = re.search(r"\bCMD\s+(.*)$", rest)
    return options, exec_form(cmd.group(1)) if cmd else None


# Compose and Kubernetes -----------------------------------------------------------------------------

def compose_file() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def kustomize(path: Path = KUSTOMIZE_EXAMPLE) -> list[dict]:
    """The manifests kustomize renders (kubectl's built-in kustomize); RuntimeError if it refuses."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise FileNotFoundError("kubectl")
    done = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {path}: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def one_of_kind(docs: list[dict], kind: str) -> dict:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


# Queries --------------------------------------------------------------------------------------------

def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries(board: dict | None = None) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every panel target and every query variable."""
    board = board or dashboard()
    queries = [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            queries.append((f"variable {variable['name']}", query))
    return queries


def expand_grafana(expr: str) -> str:
    """A dashboard query as Prometheus would get it from Grafana, the node variable set to All."""
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    return expr


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: identifiers not inside {...} label matchers, quotes or
    [...] ranges, and not PromQL's own words."""
    expr = re.sub(r"label_values\(\s*([^,()]+?)\s*,\s*\w+\s*\)", r"\1", expr)  # Grafana's: metric, label
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    stripped = re.sub(r"\{[^}]*\}", "{}", stripped)  # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "[]", stripped)  # ranges
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1()", stripped)
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", stripped))
    return {name for name in names if name not in PROMQL_WORDS and not re.fullmatch(r"\d.*|e\d+", name)}


def label_values(expr: str, label: str) -> set[str]:
    """Values an expression matches `label` against with = or != (regex alternatives split on |)."""
    values = set()
    for op, value in re.findall(rf'\b{label}\s*(=~|!=|=)\s*"([^"]*)"', expr):
        values.update(value.split("|") if op == "=~" else [value])
    return values
