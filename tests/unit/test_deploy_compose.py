"""deploy/compose/compose.yaml: Compose itself validates it (Debian's docker-compose, offline), and it
agrees with nsup: the stop grace covers the config's flatten budget, nsup runs the image's entrypoint,
stops before the venue and Redis it needs, and is not restarted into a new session after ABORTED.

No container runs here; the image itself is checked in tests/unit/test_deploy_container.py and
built and run by tests/e2e/test_image.py where a builder is present.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from paper_venue.launcher import endpoints_in
from supervisor.config import load_config
from supervisor.preflight import flatten_budget_secs
from tests.deploy_files import COMPOSE, COMPOSE_CONFIG, compose_file

COMPOSE_BINARY = shutil.which("docker-compose")
needs_compose = pytest.mark.skipif(COMPOSE_BINARY is None, reason="docker-compose is not installed (scripts/test installs it)")


def seconds(duration: str) -> float:
    """Compose's durations: 300s, 5m, 1m30s."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", duration)
    assert parts and duration, f"not a duration: {duration!r}"
    h, m, s = parts.groups()
    return int(h or 0) * 3600 + int(m or 0) * 60 + float(s or 0)


def compose_config(path) -> subprocess.CompletedProcess:
    return subprocess.run([COMPOSE_BINARY, "-f", str(path), "config", "-q"], capture_output=True, text=True,
                          timeout=60, cwd=path.parent)


@needs_compose
def test_compose_validates_the_file():
    result = compose_config(COMPOSE)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@needs_compose
def test_compose_refuses_a_broken_copy(tmp_path):
    """The validation is real: a misspelt key is refused."""
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periods:"))
    shutil.copy(COMPOSE_CONFIG, tmp_path)
    result = compose_config(broken)
    assert result.returncode != 0 and "stop_grace_periods" in result.stderr


def test_the_stop_grace_covers_the_flatten_budget():
    services = compose_file()["services"]
    config = load_config(COMPOSE_CONFIG)
    grace = seconds(services["nsup"]["stop_grace_period"])
    assert grace > flatten_budget_secs(config) + config.redis.drain_secs
    preflight = services["preflight"]["entrypoint"]
    assert preflight[:2] == ["nsup", "preflight"] and "--strict" in preflight
    assert float(preflight[preflight.index("--stop-timeout-secs") + 1]) == grace  # what preflight is told
    assert services["nsup"]["stop_signal"] == "SIGTERM"


def test_nsup_runs_the_images_entrypoint_after_preflight():
    services = compose_file()["services"]
    nsup = services["nsup"]
    assert "entrypoint" not in nsup and "command" not in nsup  # the image's: nsup run, exec form
    assert nsup["depends_on"]["preflight"]["condition"] == "service_completed_successfully"
    assert {"redis", "paper-venue"} <= set(nsup["depends_on"])  # so `down` stops nsup first, while they still answer
    assert nsup["restart"] == "no"  # ABORTED (exit 3) is for a person, and Docker cannot tell it from a crash
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in nsup["volumes"]}
    assert mounts["/etc/nsup/nsup.toml"] == "./nsup.toml"
    assert mounts[load_config(COMPOSE_CONFIG).supervisor.state_dir] == "nsup-state"  # a named volume
    assert nsup["volumes"] == services["preflight"]["volumes"]
    assert all(port.startswith("127.0.0.1:") for port in nsup.get("ports", []))  # metrics: loopback only


def test_the_config_mirrors_to_the_composed_redis_and_trades_on_the_composed_venue():
    services = compose_file()["services"]
    config = load_config(COMPOSE_CONFIG)
    assert config.redis.url.startswith("redis://redis:") and config.redis.node_cache
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == "yes"
    venue = services["paper-venue"]["entrypoint"]
    venue_dir = venue[venue.index("--dir") + 1]
    assert venue[:2] == ["nsup", "paper-venue"]
    params = config.node.params
    assert params["venue"] == "paper"
    assert (params["venue_endpoint"], params["quotes_endpoint"]) == endpoints_in(Path(venue_dir))
    assert any(volume.endswith(f":{venue_dir}") for volume in services["nsup"]["volumes"])  # the shared sockets
    host, port = config.metrics.listen.rsplit(":", 1)
    assert host == "0.0.0.0" and any(p.endswith(f":{port}") for p in services["nsup"]["ports"])


def test_the_file_is_plain_yaml():
    assert isinstance(yaml.safe_load(COMPOSE.read_text()), dict)
