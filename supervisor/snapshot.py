"""What nsup knows at one moment, in one typed value: `Supervisor.snapshot()`.

Everyone who shows or keeps nsup's state reads this and nothing else of the daemon: the control
socket's `status`, the metrics endpoint, the status copy in Redis, systemd's STATUS line and the
persisted state. The node's part (`node`) is its last status as heard; None before it has said.
"""

from __future__ import annotations

import msgspec

from supervisor.intent import StopRequest
from supervisor.persisted_state import PersistedState, WorkerIdentity
from supervisor.protocol import NodeStatus
from supervisor.scheduler import ScheduleView


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    state: str
    node: NodeStatus | None
    health: str | None
    hung: bool
    stop: StopRequest | None
    paused: bool
    trader_id: str | None
    worker: WorkerIdentity | None
    worker_alive: bool
    worker_uptime_secs: float | None
    supervisor_pid: int
    supervisor_uptime_secs: float
    heartbeat_age_secs: float | None
    restarts: int
    last_transition: dict | None
    reconciliation_mismatch: list[str] = []  # this start's: what the node found that the last session did not leave
    degraded: str | None = None  # what of nsup's record (journal, state.json) cannot be written now, and why
    records_held: int = 0  # journal records held in memory until the disk takes them
    schedule: ScheduleView | None = None  # the trading-session schedule, if configured
    lease_lost: str | None = None  # why the node's lease (supervisor/lease.py) is lost: closing-only until it is back

    def count_fields(self) -> dict:
        """positions_open, orders_inflight, orders_open: as the journal and systemd's STATUS carry them."""
        c = self.node.counts if self.node else None
        return {"positions_open": c.positions_open if c else None, "orders_inflight": c.orders_inflight if c else None,
                "orders_open": c.orders_open if c else None}

    def status(self) -> dict:
        """What `nsupctl status` shows (and the Redis copy holds)."""
        node = self.node
        return {
            "state": self.state,
            "trading_state": node.trading_state if node else None,
            **self.count_fields(),
            "positions": node.positions if node else [],
            "orders": node.orders if node else [],
            "reconciliation_mismatch": self.reconciliation_mismatch,
            "strategies": node.strategies if node else [],
            "components": node.components if node else {},  # only those DEGRADED or FAULTED, by id
            "components_heard": node.components_heard if node else None,
            "stuck": self.state == "STUCK",
            "hung": self.hung,
            "health": self.health,
            "data_age_secs": node.data_age_secs if node else None,
            "trader_id": self.trader_id,
            "worker_pid": self.worker.pid if self.worker and self.worker_alive else None,
            "worker_uptime_secs": self.worker_uptime_secs,
            "supervisor_pid": self.supervisor_pid,
            "supervisor_uptime_secs": self.supervisor_uptime_secs,
            "heartbeat_age_secs": self.heartbeat_age_secs,
            "restarts": self.restarts,
            "paused": self.paused,
            "lease_lost": self.lease_lost,
            "shutdown_requested": self.stop is not None,
            "stop": self.stop,
            "last_transition": self.last_transition,
            "degraded": f"degraded: {self.degraded}" if self.degraded else None,
            "records_held": self.records_held,
            "worker_log": node.log_problem if node else None,
            "schedule": self.schedule,
        }

    def persisted(self) -> PersistedState:
        """What a restarted nsup needs to carry on from here."""
        return PersistedState(state=self.state, worker=self.worker, trader_id=self.trader_id, stop=self.stop,
                              paused=self.paused, restarts=self.restarts,
                              schedule_done=self.schedule.done if self.schedule else [])
