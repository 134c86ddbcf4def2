"""deploy/container/Containerfile, read statically (tests/e2e/test_image.py builds and runs it where a
builder is present): nsup is the exec-form entrypoint, the user is not root, the health check is
`nsupctl status` on the state dir the shipped configs use, and the image's directories are theirs.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from supervisor.config import load_config
from tests.deploy_files import (
    COMPOSE_CONFIG, CONTAINERFILE, KUSTOMIZE_EXAMPLE, NSUP_READY, containerfile_stages, exec_form, healthcheck_command,
)

CONFIGS = [COMPOSE_CONFIG, KUSTOMIZE_EXAMPLE / "nsup.toml"]  # the configs that run in this image


@pytest.fixture(scope="module")
def final_stage() -> list[tuple[str, str]]:
    return containerfile_stages()[-1]


def last(stage, instruction: str) -> str:
    found = [rest for name, rest in stage if name == instruction]
    assert found, f"no {instruction} in the final stage"
    return found[-1]


def test_the_entrypoint_is_nsup_run_in_exec_form(final_stage):
    entrypoint = exec_form(last(final_stage, "ENTRYPOINT"))
    assert entrypoint is not None, "ENTRYPOINT must be a JSON array: a shell in between would take nsup's SIGTERM"
    assert entrypoint[:3] == ["nsup", "run", "--config"]
    assert not [rest for name, rest in final_stage if name == "CMD"]  # nothing appended to nsup's arguments
    assert last(final_stage, "STOPSIGNAL") == "SIGTERM"


def test_the_image_runs_as_a_fixed_non_root_uid(final_stage):
    user = last(final_stage, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: numeric (runAsNonRoot can check it) and not root"
    after_user = final_stage[[i for i, (name, _) in enumerate(final_stage) if name == "USER"][-1]:]
    assert all(name not in ("RUN", "COPY", "ADD") for name, _ in after_user[1:]), "nothing runs as root after USER"


def test_the_health_check_is_nsupctl_status_and_never_a_state(final_stage):
    options, command = healthcheck_command(final_stage)
    assert command is not None, "HEALTHCHECK CMD in exec form"
    assert command[0] == "nsupctl" and command[-1] == "status"
    assert "--json" not in command  # the exit code is the answer: 0 whenever nsup answers, HALTING included
    state_dir = command[command.index("--state-dir") + 1]
    for config in CONFIGS:
        assert load_config(config).supervisor.state_dir == state_dir, config
    startup = max(load_config(config).supervisor.startup_timeout_secs for config in CONFIGS)
    assert int(options["--start-period"].removesuffix("s")) >= startup
    assert int(options["--retries"]) >= 3  # one slow answer is not unhealthy


def test_the_configs_fit_the_image(final_stage):
    entrypoint = exec_form(last(final_stage, "ENTRYPOINT"))
    config_path = entrypoint[entrypoint.index("--config") + 1]
    made = " ".join(rest for name, rest in final_stage if name == "RUN")
    uid = last(final_stage, "USER").split(":")[0]
    for config in CONFIGS:
        s = load_config(config).supervisor
        assert f"-o {uid}" in made and s.state_dir in made and s.run_dir in made, "the image makes both, owned by its user"
        assert s.run_dir != s.state_dir  # sockets on the container's own filesystem, not on a volume
    assert config_path == "/etc/nsup/nsup.toml"
    assert any(name == "VOLUME" and load_config(CONFIGS[0]).supervisor.state_dir in rest for name, rest in final_stage)


def test_the_readiness_probe_is_in_the_image_and_answers_without_nsup(final_stage, tmp_path):
    assert any(name == "COPY" and "deploy/container/nsup-ready" in rest for name, rest in final_stage)
    missing = subprocess.run([sys.executable, str(NSUP_READY), "--state-dir", str(tmp_path)], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 3 and "Traceback" not in missing.stderr and missing.stderr.startswith("nsup-ready: ")
    usage = subprocess.run([sys.executable, str(NSUP_READY)], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "RUNNING" in usage.stderr


def test_the_containerfile_reader_joins_continued_lines():
    """The reader the tests above rely on: continuations joined, comments inside them dropped."""
    stages = containerfile_stages(CONTAINERFILE)
    assert len(stages) == 2  # build, then the image
    assert all(not rest.endswith("\\") for stage in stages for _, rest in stage)
