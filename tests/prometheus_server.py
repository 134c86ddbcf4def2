"""A private Prometheus for one test: its own free port on 127.0.0.1, its own data dir, the targets and
rule files it is given, a short scrape and evaluation interval; stopped at teardown.

scripts/test installs Debian's `prometheus` package when it is missing (promtool comes with it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.redis_server import free_port

START_TIMEOUT_SECS = 30.0


class PrometheusServer:
    def __init__(self, directory: Path, targets: dict[str, dict[str, str]], rule_files: list[Path],
                 interval: str = "1s"):
        """`targets`: {"127.0.0.1:9464": {"node": "a"}, ...}, scraped as job "nsup"."""
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: scripts/test installs it (apt-get install prometheus)")
        self.binary, self.directory = binary, directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": "nsup", "static_configs": [
                {"targets": [target], "labels": labels} for target, labels in targets.items()]}],
        }
        self.config_path = directory / "prometheus.yml"
        self.config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=open(self.directory / "prometheus.log", "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"prometheus did not start on {self.port}: {(self.directory / 'prometheus.log').read_text()[-1000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def api(self, path: str, **params) -> dict | list:
        """GET /api/v1/PATH; the answer's data, or RuntimeError with Prometheus's own error."""
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query: [{"metric": {...}, "value": [ts, "v"]}, ...]."""
        return self.api("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (result := predicate()):
                return result
            time.sleep(0.2)
        raise AssertionError(f"Prometheus: timed out waiting for {what}; alerts {self.alerts()}")


@pytest.fixture
def prometheus_server(tmp_path):
    """make(targets, rule_files) -> a started PrometheusServer, stopped at teardown."""
    servers: list[PrometheusServer] = []

    def make(targets: dict[str, dict[str, str]], rule_files: list[Path], interval: str = "1s") -> PrometheusServer:
        servers.append(PrometheusServer(tmp_path / f"prometheus{len(servers)}", targets, rule_files, interval).start())
        return servers[-1]

    yield make
    for server in servers:
        server.stop()
