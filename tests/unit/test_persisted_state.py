"""state.json across an upgrade (the worker outlives nsup, so a new nsup reads what an older one wrote), and on
a disk that will not take it."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from supervisor import persisted_state
from supervisor.intent import StopRequest
from supervisor.persisted_state import PersistedState, StateStore, WorkerIdentity, load, save


def test_a_state_written_before_the_stop_was_one_value_carries_its_stop_on(tmp_path):
    path = tmp_path / "state.json"
    old = {"state": "HALTING", "worker": None, "trader_id": "T-1", "shutdown_requested": True,
           "shutdown_actor": "signal:SIGTERM", "paused": True, "restarts": 2, "version": 7}
    path.write_text(json.dumps(old))
    assert load(path) == PersistedState(state="HALTING", trader_id="T-1", stop=StopRequest("signal:SIGTERM", final=True),
                                        paused=True, restarts=2, version=7)
    old.update(shutdown_requested=True, shutdown_actor="alice@desk")
    path.write_text(json.dumps(old))
    assert load(path).stop == StopRequest("alice@desk", final=False), "an operator's stop may still be resumed"
    old.update(shutdown_requested=False, shutdown_actor="")
    path.write_text(json.dumps(old))
    assert load(path).stop is None


def test_the_stop_round_trips(tmp_path):
    path = tmp_path / "state.json"
    state = PersistedState(state="STUCK", stop=StopRequest("signal:SIGINT", final=True))
    save(path, state)
    assert load(path) == state


def test_a_state_the_disk_will_not_take_is_kept_and_written_later_never_raised(tmp_path, monkeypatch):
    """A full or read-only state dir must not kill nsup mid-stop (it did: ENOSPC on state.tmp)."""
    path = tmp_path / "state.json"
    offered = []
    store = StateStore(path, mirror=SimpleNamespace(offer_state=offered.append))
    store.save(PersistedState(state="RUNNING"))
    real_replace = os.replace

    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(persisted_state.os, "replace", read_only)
    store.save(PersistedState(state="HALTING", stop=StopRequest("signal:SIGTERM", final=True)))
    assert store.problem == "EROFS: Read-only file system"
    assert load(path).state == "RUNNING" and not path.with_suffix(".tmp").exists()
    assert offered[-1].state == "HALTING", "Redis's copy is offered all the same"
    assert store.retry() == store.problem
    monkeypatch.setattr(persisted_state.os, "replace", real_replace)
    assert store.retry() is None and store.problem is None
    assert load(path).state == "HALTING" and load(path).version == offered[-1].version


def test_a_failed_save_leaves_no_part_written_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(persisted_state.os, "fsync", full)
    store = StateStore(path)
    store.save(PersistedState(state="HALTING"))
    assert store.problem == "ENOSPC: No space left on device"
    assert not path.exists() and not path.with_suffix(".tmp").exists()
    monkeypatch.setattr(persisted_state.os, "fsync", real_fsync)
    assert store.retry() is None and load(path).state == "HALTING"


def test_a_worker_caught_mid_exec_is_known_by_the_command_line_it_was_given(tmp_path, monkeypatch):
    """Popen returns once the exec is past its point of no return, before the kernel has put the new
    program's argv in place: /proc shows no command line then (a quarter of spawns on a loaded 2-core
    machine). The identity nsup records at spawn is what a restarted nsup checks its worker by."""
    lock = tmp_path / "worker.lock"
    argv = [sys.executable, "-c", "print('up', flush=True); import time; time.sleep(30)", "--lock", str(lock)]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE)
    try:
        cmdline, read_bytes = Path(f"/proc/{child.pid}/cmdline"), Path.read_bytes
        with monkeypatch.context() as mid_exec:
            mid_exec.setattr(Path, "read_bytes", lambda path: b"" if path == cmdline else read_bytes(path))
            as_shown, as_given = WorkerIdentity.of(child.pid), WorkerIdentity.of(child.pid, argv)
        assert as_shown.cmdline == [] and as_given.cmdline == argv
        assert child.stdout.readline() == b"up\n"  # its exec has finished: /proc shows its argv now
        assert not PersistedState(state="RECOVERING", worker=as_shown).vouches_for_a_live_worker(lock)
        assert PersistedState(state="RECOVERING", worker=as_given).vouches_for_a_live_worker(lock)
    finally:
        child.kill()
        child.wait()
