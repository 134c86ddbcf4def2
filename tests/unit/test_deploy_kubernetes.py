"""deploy/kubernetes/: kustomize renders the base and the example overlay, kubernetes-validate checks the
result against the API's own schemas (--strict: no unknown field), and the manifests agree with nsup:
one replica, a grace period above the config's flatten budget, preStop the graceful stop, liveness
that answers in HALTING, readiness on RUNNING, the config from a ConfigMap, secrets from a Secret.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from supervisor.config import load_config, parse_config
from supervisor.preflight import flatten_budget_secs
from tests.deploy_files import (
    CONTAINERFILE, KUBERNETES, KUSTOMIZE_EXAMPLE, containerfile_stages, exec_form, healthcheck_command, kustomize,
    one_of_kind,
)

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")

# The oldest Kubernetes still commonly run, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", None)


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return kustomize(KUSTOMIZE_EXAMPLE)


@pytest.fixture(scope="module")
def pod(rendered) -> dict:
    return one_of_kind(rendered, "StatefulSet")["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def config(rendered):
    config_map = one_of_kind(rendered, "ConfigMap")
    return parse_config(tomllib.loads(config_map["data"]["nsup.toml"]), source="ConfigMap nsup.toml")


def container(pod: dict, name: str = "nsup") -> dict:
    return next(c for c in pod["containers"] + pod.get("initContainers", []) if c["name"] == name)


def validate(path: Path, version: str | None) -> subprocess.CompletedProcess:
    binary = Path(sys.executable).with_name("kubernetes-validate")
    return subprocess.run([str(binary), "--strict", *(["-k", version] if version else []), str(path)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS, ids=lambda v: v or "newest")
@pytest.mark.parametrize("what", ["base", "overlays/example"])
def test_the_rendered_manifests_validate_strictly(what, version, tmp_path):
    docs = kustomize(KUBERNETES / what)
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    result = validate(out, version)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {doc["kind"] for doc in docs} >= {"StatefulSet", "Service", "PodDisruptionBudget"}


def test_validation_refuses_an_unknown_field(rendered, tmp_path):
    """--strict is real: a misspelt field in the StatefulSet is refused."""
    broken = [dict(doc) for doc in rendered]
    statefulset = one_of_kind(broken, "StatefulSet")
    statefulset["spec"] = {**statefulset["spec"], "terminationGracePeriod": 300}
    out = tmp_path / "broken.yaml"
    out.write_text(yaml.safe_dump_all(broken))
    result = validate(out, None)
    assert result.returncode != 0 and "terminationGracePeriod" in result.stdout + result.stderr


def test_one_replica_per_node_and_a_budget_that_stops_drains(rendered):
    statefulset, budget = one_of_kind(rendered, "StatefulSet"), one_of_kind(rendered, "PodDisruptionBudget")
    assert statefulset["spec"]["replicas"] == 1
    assert budget["spec"]["maxUnavailable"] == 0
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    for selector in (statefulset["spec"]["selector"]["matchLabels"], budget["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items() and "nsup.io/node" in selector  # this node's pod only
    service = one_of_kind(rendered, "Service")
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"


def test_the_grace_period_covers_the_flatten_budget_and_preflight_checks_it(pod, config):
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > flatten_budget_secs(config) + config.redis.drain_secs
    preflight = container(pod, "preflight")["command"]
    assert preflight[:2] == ["nsup", "preflight"] and "--strict" in preflight
    assert float(preflight[preflight.index("--stop-timeout-secs") + 1]) == grace
    assert preflight[preflight.index("--config") + 1] == "/etc/nsup/nsup.toml"


def test_prestop_is_the_graceful_stop_on_the_configs_state_dir(pod, config):
    nsup = container(pod)
    assert "command" not in nsup and "args" not in nsup  # the image's entrypoint: nsup run, exec form
    assert nsup["lifecycle"]["preStop"]["exec"]["command"] == [
        "nsupctl", "--state-dir", config.supervisor.state_dir, "stop", "--wait"]


def test_liveness_is_the_images_health_check_and_readiness_is_running(pod, config):
    nsup = container(pod)
    _, health = healthcheck_command(containerfile_stages(CONTAINERFILE)[-1])
    for probe in ("startupProbe", "livenessProbe"):
        assert nsup[probe]["exec"]["command"] == health  # exit 0 whenever nsup answers: HALTING is alive
    readiness = nsup["readinessProbe"]["exec"]["command"]
    assert readiness[0] == "nsup-ready" and readiness[readiness.index("--state-dir") + 1] == config.supervisor.state_dir
    liveness = nsup["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60  # a slow minute is not a dead nsup
    startup = nsup["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= config.supervisor.startup_timeout_secs
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):  # nsupctl's own --timeout ends first
        command = nsup[probe]["exec"]["command"]
        assert nsup[probe]["timeoutSeconds"] > float(command[command.index("--timeout") + 1])


def test_config_from_a_configmap_and_secrets_from_a_secret(rendered, pod, config):
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container(pod)["volumeMounts"]}
    config_map = one_of_kind(rendered, "ConfigMap")
    assert volumes[mounts_named(mounts, "/etc/nsup")]["configMap"]["name"] == config_map["metadata"]["name"]
    entrypoint = exec_form(next(rest for name, rest in containerfile_stages(CONTAINERFILE)[-1] if name == "ENTRYPOINT"))
    assert entrypoint[entrypoint.index("--config") + 1] == "/etc/nsup/nsup.toml"
    secret = volumes["secrets"]["secret"]
    assert secret["secretName"].endswith("-secrets") and mounts["secrets"]["readOnly"]
    assert "nsup.toml" not in yaml.safe_dump(secret)
    assert config.node.params.get("venue") == "sandbox"  # the example runs anywhere, without a venue
    state = mounts_named(mounts, config.supervisor.state_dir)
    assert state in {t["metadata"]["name"] for t in one_of_kind(rendered, "StatefulSet")["spec"]["volumeClaimTemplates"]}
    assert volumes[mounts_named(mounts, config.supervisor.run_dir)]["emptyDir"]["medium"] == "Memory"
    assert mounts == {m["name"]: m for m in container(pod, "preflight")["volumeMounts"]}  # preflight checks the same


def mounts_named(mounts: dict, path: str) -> str:
    return next(name for name, mount in mounts.items() if mount["mountPath"] == path)


def test_the_pod_runs_as_the_images_user_without_privileges(pod):
    user = next(rest for name, rest in containerfile_stages(CONTAINERFILE)[-1][::-1] if name == "USER")
    security = pod["securityContext"]
    assert security["runAsNonRoot"] and str(security["runAsUser"]) == user.split(":")[0]
    for name in ("nsup", "preflight"):
        c = container(pod, name)["securityContext"]
        assert c["allowPrivilegeEscalation"] is False and c["readOnlyRootFilesystem"] and c["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False


def test_the_example_config_is_a_file_nsup_loads():
    assert load_config(KUSTOMIZE_EXAMPLE / "nsup.toml").metrics.listen.startswith("0.0.0.0:")
