"""The control path next to its peers: nsup vs supervisord vs circusd, on this machine, in one run.

    .venv/bin/python scripts/benchmark_control.py [--calls 1000] [--warmup 50] [--cli-runs 30]

For each daemon, with one program under it, this times two things:

  in-process    one status request and its reply, from a client already connected in a running
                Python process (median and p99 of --calls, after --warmup unmeasured calls);
  whole-process the operator's command line tool run as a subprocess: interpreter start, imports,
                connect, one status, print, exit (median and p90 of --cli-runs).

For scale, the floor: a bare pyzmq ROUTER in a process of its own that answers each request at once
with a reply as long as nsup's status, and a pyzmq DEALER here asking it (in-process only).

nsup runs the supervised demo node (tests/e2e/conftest.py's NsupRun, as scripts/benchmark.py does).
supervisord and circusd run `sleep 3600` from a separate virtualenv, .bench-venv, which this script
creates with the same interpreter as .venv and fills from the package registry when it is missing.
Everything listens on unix sockets in temp dirs. Prints figures only: no assertion, no pass or fail.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from supervisor.control.client.client import ControlClient  # noqa: E402
from tests.e2e.conftest import NsupRun, pid_alive  # noqa: E402  (one way to drive nsup, shared with the tests)

VENV = REPO / ".venv"
BENCH_VENV = REPO / ".bench-venv"
BENCH_PY = BENCH_VENV / "bin" / "python"
PYCACHE = BENCH_VENV / "pycache"  # this checkout's bytecode, for the benchmarks' processes (use_bytecode)
CIRCUS_SPECS = ("circus", "circus<0.19", "circus<0.18")  # newest first; the first that imports is kept

# Runs inside .bench-venv with `python -I` and a temp dir as cwd: nsup's own package is also named
# `supervisor`, and must not shadow supervisord's. Prints one JSON object.
PEER_CLIENT = r"""
import json, sys, time
from importlib.metadata import version
mode, target, calls, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = {"python": sys.version.split()[0]}
if mode == "supervisord":
    import xmlrpc.client
    from supervisor.xmlrpc import SupervisorTransport
    out["version"] = version("supervisor")
    proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=SupervisorTransport(None, None, target))
    call = lambda: proxy.supervisor.getAllProcessInfo()
    ok = lambda r: isinstance(r, list)
    ready = lambda r: any(p["name"] == "sleeper" and p["statename"] == "RUNNING" for p in r)
    pids = lambda r: [p["pid"] for p in r if p.get("pid")]
else:
    from circus.client import CircusClient
    out["version"] = version("circus")
    client = CircusClient(endpoint=target, timeout=5.0)
    call = lambda: client.call({"command": "status", "properties": {}})
    ok = lambda r: r.get("status") == "ok"
    ready = lambda r: ok(r) and r.get("statuses", {}).get("sleeper") == "active"
    pids = lambda r: client.call({"command": "list", "properties": {"name": "sleeper"}}).get("pids", [])
out["pyzmq"] = version("pyzmq") if mode == "circusd" else None
deadline, last = time.monotonic() + 20.0, None
while True:
    try:
        last = call()
        if ready(last):
            break
    except Exception as exc:
        last = repr(exc)
    if time.monotonic() > deadline:
        print(json.dumps({"error": f"not ready within 20s (last answer: {str(last)[:300]})"}))
        sys.exit(1)
    time.sleep(0.05)
out["child_pids"] = pids(last)
for _ in range(warmup):
    call()
samples, errors, clock = [], 0, time.perf_counter_ns
for _ in range(calls):
    t0 = clock()
    reply = call()
    samples.append(clock() - t0)
    errors += not ok(reply)
out.update(samples_ns=samples, errors=errors)
print(json.dumps(out))
"""


# A bare ROUTER that answers every request with `size` bytes: the floor under any ZeroMQ control
# socket. Runs in its own process (as the daemons do), blocking, no asyncio, no decoding.
ECHO_SERVER = r"""
import sys, zmq
endpoint, size = sys.argv[1], int(sys.argv[2])
socket = zmq.Context.instance().socket(zmq.ROUTER)
socket.bind(endpoint)
print("ready", flush=True)
reply = b"x" * size
while True:
    identity, _request = socket.recv_multipart()
    socket.send_multipart([identity, reply])
"""

# ---------------------------------------------------------------------------------------------
# figures


def pct(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    xs = sorted(samples)
    if not xs:
        return math.nan
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Result:
    """One daemon's figures, in seconds; None where not measured, with the reason in `notes`."""

    def __init__(self, name: str):
        self.name = name
        self.inproc: list[float] = []
        self.cli: list[float] = []
        self.notes: list[str] = []
        self.unavailable: str | None = None
        self.reply_bytes = 0  # nsup's: the echo answers with as many

    def figures(self) -> tuple[float | None, ...]:
        ip = (pct(self.inproc, 50), pct(self.inproc, 99)) if self.inproc else (None, None)
        cl = (statistics.median(self.cli), pct(self.cli, 90)) if self.cli else (None, None)
        return ip + cl


def say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def time_cli(argv: list[str], runs: int, cwd: Path, env: dict | None = None, warmup: int = 2) -> tuple[list[float], list[str]]:
    """Wall time of the whole command, `runs` times after `warmup` unmeasured runs; and any failures."""
    times, failures = [], []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            failures.append(f"exit {done.returncode}: {(done.stderr or done.stdout).decode(errors='replace').strip()[-300:]}")
        if i >= warmup:
            times.append(elapsed)
    return times, failures


def use_bytecode() -> None:
    """Run this checkout's code from bytecode, as an installed package would (pip compiles a package
    as it installs it, as it did the peers'): every process started from here on reads and writes its
    bytecode in PYCACHE, not in the repo. From source, each start compiles nsup's modules again,
    which costs it time and about 1.5 MB of memory."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(PYCACHE)


def nsupctl_env() -> dict:
    """nsupctl runs this checkout's code: PYTHONPATH first, ahead of whatever .venv installed."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


def peer_env() -> dict:
    """The environment for .bench-venv programs: nothing that points at .venv or the repo (their own
    bytecode is where pip compiled it)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONPYCACHEPREFIX")}
    env["PATH"] = f"{BENCH_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def tail(path: Path, chars: int = 400) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip()
    except OSError:
        return "(no log)"


def stop_process(proc: subprocess.Popen | None, what: str, timeout: float = 20.0) -> str:
    """SIGTERM, wait; SIGKILL only if it will not go. Returns how it ended."""
    if proc is None or proc.poll() is not None:
        return f"{what} had already exited ({proc.returncode if proc else 'never started'})"
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout)
        return f"{what} stopped by SIGTERM, exit {code}"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return f"{what} did not stop within {timeout:g}s of SIGTERM: killed"


def kill_leftovers(pids: list[int], what: str) -> list[str]:
    """Children of a peer daemon that outlived it (only the pids it reported to us)."""
    notes = []
    deadline = time.monotonic() + 5.0
    for pid in pids:
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            notes.append(f"{what}'s child {pid} outlived it: killed")
    return notes


# ---------------------------------------------------------------------------------------------
# the bench virtualenv


def pip_install(spec: str) -> str | None:
    done = subprocess.run(
        [str(BENCH_PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec],
        cwd=tempfile.gettempdir(), env=peer_env(), stdin=subprocess.DEVNULL, capture_output=True, timeout=600,
    )
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.decode(errors="replace").splitlines() if ln.strip() and not ln.startswith("WARNING")]
        return f"pip install {spec!r} failed: {' | '.join(lines[-3:])[:400]}"
    return None


def imports(module: str) -> str | None:
    done = subprocess.run(
        [str(BENCH_PY), "-I", "-c", f"import {module}"], cwd=tempfile.gettempdir(), env=peer_env(),
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
    )
    return None if done.returncode == 0 else done.stderr.decode(errors="replace").strip().splitlines()[-1][:300]


def ensure_bench_venv() -> dict[str, str | None]:
    """Make .bench-venv if missing and install supervisor and circus; the reason each is unusable, or None."""
    if not BENCH_PY.exists():
        base = VENV / "bin" / "python"
        base = base if base.exists() else Path(sys.executable)
        say(f"creating {BENCH_VENV} with {base} (one-off)")
        subprocess.run([str(base), "-m", "venv", str(BENCH_VENV)], check=True, timeout=300)
    problems: dict[str, str | None] = {}
    problems["supervisord"] = imports("supervisor.xmlrpc, supervisor.supervisord")
    if problems["supervisord"]:
        say("installing supervisor into .bench-venv")
        problems["supervisord"] = pip_install("supervisor") or imports("supervisor.xmlrpc, supervisor.supervisord")
    problems["circusd"] = imports("circus.client, circus.arbiter")
    if problems["circusd"]:
        tried = []
        for spec in CIRCUS_SPECS:
            say(f"installing {spec} into .bench-venv")
            failure = pip_install(spec) or imports("circus.client, circus.arbiter")
            if failure is None:
                problems["circusd"] = None
                if spec != CIRCUS_SPECS[0]:
                    say(f"the newest circus did not work here; using {spec}")
                break
            tried.append(f"{spec}: {failure}")
        else:
            problems["circusd"] = "; ".join(tried)
    return problems


# ---------------------------------------------------------------------------------------------
# the three daemons


def bench_nsup(calls: int, warmup: int, cli_runs: int, tmp: Path) -> Result:
    result = Result("nsup")
    run = NsupRun(tmp / "nsup", {"hold_secs": 3600.0, "flat_secs": 0.0}, {})
    client = None
    try:
        say("nsup: starting the supervised demo node")
        run.start()
        run.wait_for_state("RUNNING")
        client = ControlClient.from_state_dir(run.state_dir)
        for _ in range(warmup):
            client.call("status")
        errors, clock = 0, time.perf_counter_ns
        for _ in range(calls):
            t0 = clock()
            reply = client.call("status")
            result.inproc.append((clock() - t0) / 1e9)
            errors += reply.status != "ok"
        if errors:
            result.notes.append(f"{errors} of {calls} in-process replies were not ok")
        result.reply_bytes = len(json.dumps({"v": reply.v, "id": reply.id, "status": reply.status, "data": reply.data}).encode())
        nsupctl = VENV / "bin" / "nsupctl"
        argv = [str(nsupctl)] if nsupctl.exists() else [str(VENV / "bin" / "python"), "-m", "supervisor.control.client.nsupctl"]
        if not nsupctl.exists():
            result.notes.append(".venv/bin/nsupctl missing (reinstall .venv); timed `python -m supervisor.control.client.nsupctl`")
        say(f"nsup: {cli_runs} x nsupctl status")
        result.cli, failures = time_cli([*argv, "--state-dir", str(run.state_dir), "status"], cli_runs, cwd=tmp,
                                        env=nsupctl_env())
        result.notes.append(f"timed {' '.join(argv)} with PYTHONPATH={REPO} (this checkout's code)"
                            + (", from bytecode" if "PYTHONPYCACHEPREFIX" in os.environ else ""))
        if failures:
            result.notes.append(f"{len(failures)} nsupctl runs failed, e.g. {failures[0]}")
        state = client.call("status").data or {}
        result.notes.append(f"state {state.get('state')}, positions open {state.get('positions_open')}, heartbeat every 0.2 s")
        client.close()
        client = None
        say("nsup: graceful stop (SIGTERM)")
        run.signal(signal.SIGTERM)
        result.notes.append(f"graceful stop: nsup exit {run.exit_code()}")
    except Exception as exc:  # a figure that could not be taken is reported, not fatal
        result.unavailable = result.unavailable or f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        if client is not None:
            client.close()
        run.kill_all()
        shutil.rmtree(run.run_dir, ignore_errors=True)
    return result


def bench_echo(calls: int, warmup: int, tmp: Path, size: int) -> Result:
    """The floor: a bare pyzmq ROUTER (its own process) answering a pyzmq DEALER here, over ipc."""
    import zmq

    result = Result("pyzmq echo")
    endpoint = f"ipc://{tmp / 'echo.sock'}"
    server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, endpoint, str(size)], stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)
    socket = None
    try:
        if server.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the echo server did not start (exit {server.poll()})")
        socket = zmq.Context.instance().socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(endpoint)
        request, clock = b'{"v":1,"id":"1","command":"status","actor":{"user":"u","host":"h"}}', time.perf_counter_ns
        for i in range(warmup + calls):
            t0 = clock()
            socket.send(request)
            if not socket.poll(5000):
                raise RuntimeError("the echo server did not answer within 5 s")
            socket.recv()
            if i >= warmup:
                result.inproc.append((clock() - t0) / 1e9)
        result.notes.append(f"replies of {size} bytes, as long as nsup's status reply")
    except Exception as exc:  # reported, not fatal
        result.unavailable = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        if socket is not None:
            socket.close()
        stop_process(server, "echo server")
    return result


def run_peer_client(mode: str, target: str, calls: int, warmup: int, cwd: Path) -> dict:
    done = subprocess.run(
        [str(BENCH_PY), "-I", "-c", PEER_CLIENT, mode, target, str(calls), str(warmup)],
        cwd=cwd, env=peer_env(), stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
    )
    try:
        out = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"client exit {done.returncode}: {done.stderr.decode(errors='replace').strip()[-400:]}") from None
    if "error" in out:
        raise RuntimeError(out["error"])
    return out


class PeerDaemon:
    """supervisord or circusd from .bench-venv, running `sleep 3600` as its one program, in `workdir`."""

    def __init__(self, name: str, workdir: Path):
        self.name, self.workdir = name, workdir
        self.log = workdir / "daemon.log"
        self.proc: subprocess.Popen | None = None
        self.child_pids: list[int] = []
        if name == "supervisord":
            sock = workdir / "supervisor.sock"
            conf = workdir / "supervisord.conf"
            conf.write_text(textwrap.dedent(f"""\
                [unix_http_server]
                file = {sock}
                chmod = 0700

                [supervisord]
                nodaemon = true
                logfile = {workdir / 'supervisord.log'}
                pidfile = {workdir / 'supervisord.pid'}
                childlogdir = {workdir}
                loglevel = warn

                [rpcinterface:supervisor]
                supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

                [supervisorctl]
                serverurl = unix://{sock}

                [program:sleeper]
                command = sleep 3600
                autostart = true
                """))
            self.argv = [str(BENCH_VENV / "bin" / "supervisord"), "-n", "-c", str(conf)]
            self.target, self.socket_path = f"unix://{sock}", sock
            self.cli = [str(BENCH_VENV / "bin" / "supervisorctl"), "-c", str(conf), "status"]
        else:
            endpoint = f"ipc://{workdir / 'circus.sock'}"
            conf = workdir / "circus.ini"
            conf.write_text(textwrap.dedent(f"""\
                [circus]
                endpoint = {endpoint}
                pubsub_endpoint = ipc://{workdir / 'circus-pub.sock'}
                stats_endpoint = ipc://{workdir / 'circus-stats.sock'}
                statsd = false
                check_delay = 5
                loglevel = WARNING
                logoutput = {workdir / 'circusd.log'}

                [watcher:sleeper]
                cmd = sleep 3600
                numprocesses = 1
                """))
            self.argv = [str(BENCH_VENV / "bin" / "circusd"), str(conf)]
            self.target, self.socket_path = endpoint, workdir / "circus.sock"
            self.cli = [str(BENCH_VENV / "bin" / "circusctl"), "--endpoint", endpoint, "status"]

    def start(self) -> PeerDaemon:
        """Start the daemon and wait for its control socket (not yet for the program)."""
        say(f"{self.name}: starting")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.argv, cwd=self.workdir, env=peer_env(), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20.0
        while not self.socket_path.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode} at start: {tail(self.log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} made no socket within 20s: {tail(self.log)}")
            time.sleep(0.02)
        return self

    def client(self, calls: int, warmup: int) -> dict:
        """Run the in-process client in .bench-venv: waits for the program to run, then times `calls`."""
        out = run_peer_client(self.name, self.target, calls, warmup, self.workdir)
        self.child_pids = out["child_pids"]
        return out

    def stop(self) -> list[str]:
        """Stop the daemon (SIGTERM, then SIGKILL) and any child of its that outlived it; how it went."""
        notes = [stop_process(self.proc, self.name)] if self.proc is not None else []
        return notes + kill_leftovers(self.child_pids, self.name)


def peer_workdir(name: str, tmp: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{name[:6]}-", dir=tmp))  # short: unix socket paths max ~107 bytes


def bench_peer(name: str, calls: int, warmup: int, cli_runs: int, tmp: Path, problem: str | None) -> Result:
    result = Result(name)
    if problem:
        result.unavailable = problem
        return result
    daemon = None
    try:
        daemon = PeerDaemon(name, peer_workdir(name, tmp))
        daemon.start()
        say(f"{name}: {calls} in-process calls")
        out = daemon.client(calls, warmup)  # waits itself for sleeper to run
        result.inproc = [ns / 1e9 for ns in out["samples_ns"]]
        result.notes.append(f"{name} {out['version']}" + (f", pyzmq {out['pyzmq']}" if out.get("pyzmq") else ""))
        if out["errors"]:
            result.notes.append(f"{out['errors']} of {calls} in-process replies were not ok")
        say(f"{name}: {cli_runs} x {Path(daemon.cli[0]).name} status")
        result.cli, failures = time_cli(daemon.cli, cli_runs, cwd=daemon.workdir, env=peer_env())
        if failures:
            result.notes.append(f"{len(failures)} {Path(daemon.cli[0]).name} runs failed, e.g. {failures[0]}")
    except Exception as exc:  # a peer that will not run is reported, not fatal
        result.unavailable = f"{type(exc).__name__}: {str(exc)[:400]}"
    finally:
        if daemon is not None:
            result.notes += daemon.stop()
    return result


# ---------------------------------------------------------------------------------------------
# report


def fmt_us(secs: float | None) -> str:
    return "-" if secs is None else f"{secs * 1e6:,.0f} µs"


def fmt_ms(secs: float | None) -> str:
    return "-" if secs is None else f"{secs * 1e3:,.1f} ms"


def ratio(peer: float | None, base: float | None) -> str:
    return "-" if peer is None or not base else f"{peer / base:.2f}x"


def report(results: list[Result], args, versions: dict, elapsed: float | None, prefix: str = "") -> None:
    if not prefix:
        print()
    print(f"{prefix}control path: status round trip, nsup vs supervisord vs circusd ({platform.node()}, {os.cpu_count()} CPUs, {platform.platform()})")
    print(f"Python: .venv {versions['venv']}   .bench-venv {versions['bench']}")
    print(f"in-process: {args.calls} calls after {args.warmup} warm-up; CLI: {args.cli_runs} runs after 2 warm-up; one after another, never two daemons at once")
    print()
    head = f"{'':<13}{'in-process p50':>16}{'in-process p99':>16}{'CLI median':>14}{'CLI p90':>12}"
    print(head)
    print("-" * len(head))
    figs = {}
    for r in results:
        if r.unavailable and not (r.inproc or r.cli):
            label = {"circusd": "circus"}.get(r.name, r.name)
            print(f"{r.name:<13}{label}: not available ({r.unavailable})")
            continue
        figs[r.name] = f = r.figures()
        print(f"{r.name:<13}{fmt_us(f[0]):>16}{fmt_us(f[1]):>16}{fmt_ms(f[2]):>14}{fmt_ms(f[3]):>12}")
    base = figs.get("nsup")
    if base and len(figs) > 1:
        print()
        print("ratio peer time / nsup time (above 1.00x: nsup answers faster; below: the peer does)")
        for name, f in figs.items():
            if name not in ("nsup", "pyzmq echo"):
                print(f"{name + ' / nsup':<20}{ratio(f[0], base[0]):>9}{ratio(f[1], base[1]):>16}{ratio(f[2], base[2]):>14}{ratio(f[3], base[3]):>12}")
        if "pyzmq echo" in figs:
            floor = figs["pyzmq echo"]
            print(f"{'nsup / pyzmq echo':<20}{ratio(base[0], floor[0]):>9}{ratio(base[1], floor[1]):>16}"
                  "   (the floor: above 1.00x is what nsup adds to a bare ROUTER's answer)")
    print()
    print("what the columns time")
    print("  nsup         in-process: ControlClient.call('status') in this process: a DEALER over ipc:// (unix socket) in the")
    print("               standard library (ZMTP 3.0, client/zmtp.py), JSON both ways; nsup answers on its asyncio loop from")
    print("               the worker's last heartbeat (no round trip to the TradingNode), while that node runs and heartbeats")
    print("               every 0.2 s. CLI: .venv/bin/nsupctl --state-dir DIR status (reads endpoints.json, connects, prints).")
    print("  supervisord  in-process: xmlrpc.client.ServerProxy + supervisor.xmlrpc.SupervisorTransport, HTTP/1.1")
    print("               keep-alive over the unix socket, supervisor.getAllProcessInfo() with one program (sleep 3600),")
    print("               in a python -I child of .bench-venv (the same interpreter).")
    print("               CLI: supervisorctl -c supervisord.conf status.")
    print("  circusd      in-process: circus.client.CircusClient.call({'command': 'status'}): pyzmq DEALER over ipc://,")
    print("               JSON both ways, one watcher (sleep 3600); in a python -I child of .bench-venv.")
    print("               CLI: circusctl --endpoint ipc://... status.")
    print("  pyzmq echo   in-process only: a pyzmq DEALER here, a bare pyzmq ROUTER in a process of its own answering at once")
    print("               with as many bytes as nsup's status reply: no asyncio, no JSON; the floor under a ZeroMQ control socket.")
    print("  CLI = wall time of the whole subprocess: fork/exec, interpreter start, imports, connect, one call, print, exit.")
    for name, secs in versions["bare"].items():
        print(f"  for scale, a bare `python -I -c pass` from {name}: median {fmt_ms(secs)}")
    if any((VENV / "lib").glob("python*/site-packages/__editable__*nsup*.pth")):
        print("  .venv holds nsup as an editable install: every interpreter start there (nsupctl's too) runs its path")
        print("  finder, which imports pathlib and re; a regular install does not pay that.")
    print()
    for r in results:
        for note in ([f"not available: {r.unavailable}"] if r.unavailable and (r.inproc or r.cli) else []) + r.notes:
            print(f"note  {r.name:<12} {note}")
    if elapsed is not None:
        print(f"total run time {elapsed:.1f} s")


def control_figures(calls: int, warmup: int, cli_runs: int) -> tuple[list[Result], dict]:
    """Make .bench-venv if needed, then time nsup, supervisord and circusd one after another."""
    problems: dict[str, str | None]
    try:
        problems = ensure_bench_venv()
    except Exception as exc:
        problems = {"supervisord": f".bench-venv: {exc}", "circusd": f".bench-venv: {exc}"}
    pythons = {".venv": VENV / "bin" / "python"}
    if BENCH_PY.exists():
        pythons[".bench-venv"] = BENCH_PY
    bare = {}
    for name, py in pythons.items():
        if py.exists():
            times, _ = time_cli([str(py), "-I", "-c", "pass"], 10, cwd=Path(tempfile.gettempdir()))
            bare[name] = statistics.median(times)
    version_of = lambda py: subprocess.run([str(py), "-I", "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True).stdout.strip() if py.exists() else "absent"  # noqa: E731
    versions = {"venv": f"{version_of(VENV / 'bin' / 'python') or platform.python_version()}", "bench": version_of(BENCH_PY), "bare": bare,
                "problems": problems}

    with tempfile.TemporaryDirectory(prefix="ctlb-") as tmp:
        tmp_path = Path(tmp)
        results = [bench_nsup(calls, warmup, cli_runs, tmp_path)]
        results.append(bench_echo(calls, warmup, tmp_path, results[0].reply_bytes or 1500))
        for name in ("supervisord", "circusd"):
            results.append(bench_peer(name, calls, warmup, cli_runs, tmp_path, problems.get(name)))
    return results, versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000, help="in-process status calls per daemon")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured in-process calls first")
    parser.add_argument("--cli-runs", type=int, default=30, help="CLI runs per daemon")
    args = parser.parse_args()
    # SIGTERM to this script still runs every finally below, so nothing it started is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    started = time.perf_counter()
    use_bytecode()
    results, versions = control_figures(args.calls, args.warmup, args.cli_runs)
    report(results, args, versions, time.perf_counter() - started)


if __name__ == "__main__":
    main()
