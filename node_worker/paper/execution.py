"""Orders to the paper venue and its events back, and reconciliation answered from the venue's own
books, so that a node restarted after kill -9 sees what it held.

Commands travel as NautilusTrader's own (paper_venue/codec.py) and the venue matches them with
NautilusTrader's own engine, so every order type, time in force and contingency the engine knows
reaches it unchanged, order lists included; the venue's order events come back as they are. A
command the venue refuses is answered to the strategy as NautilusTrader would (OrderRejected,
OrderModifyRejected, OrderCancelRejected) and reported to nsup as a fault.

The client trades one account (`account_id`, "SIM-001" by default) whose OMS type at the venue
must be the `oms_type` configured here; the venue gives the account to this node's trader id, and
refuses another node while this one uses it or the account is not flat, unless the account was
declared shared at the venue (several nodes, each with its own instruments: nsup's [node] scope).
"""

from __future__ import annotations

import msgspec
from nautilus_trader.common.providers import InstrumentProvider
from nautilus_trader.execution.messages import SubmitOrder, SubmitOrderList
from nautilus_trader.execution.reports import FillReport, OrderStatusReport, PositionStatusReport
from nautilus_trader.live.config import LiveExecClientConfig
from nautilus_trader.live.execution_client import LiveExecutionClient
from nautilus_trader.live.factories import LiveExecClientFactory
from nautilus_trader.model.enums import AccountType, OmsType
from nautilus_trader.model.identifiers import AccountId, ClientId, Venue

from node_worker.faults import report_fault
from node_worker.paper.venue_link import VenueError, VenueLink, VenueTimeout
from paper_venue import protocol as v
from paper_venue.codec import dumps, loads


class PaperExecClientConfig(LiveExecClientConfig, frozen=True, kw_only=True):
    endpoint: str
    account_id: str = "SIM-001"
    oms_type: str = "NETTING"  # the account's at the venue: NETTING or HEDGING
    request_timeout_secs: float = 5.0


class PaperExecClient(LiveExecutionClient):
    def __init__(self, loop, msgbus, cache, clock, config: PaperExecClientConfig, name: str):
        if config.oms_type not in v.OMS_TYPES:
            raise ValueError(f"PaperExecClientConfig.oms_type {config.oms_type!r} is not one of {', '.join(v.OMS_TYPES)}")
        super().__init__(
            loop=loop, client_id=ClientId(name), venue=Venue(v.VENUE), oms_type=OmsType[config.oms_type],
            account_type=AccountType.MARGIN, base_currency=None, instrument_provider=InstrumentProvider(),
            msgbus=msgbus, cache=cache, clock=clock,
        )
        self._set_account_id(AccountId(config.account_id))
        hello = lambda i: v.Hello(request_id=i, account_id=config.account_id, trader_id=str(self.trader_id),  # noqa: E731
                                  oms_type=config.oms_type)
        self._link = VenueLink(config.endpoint, hello, self._on_venue_event, self._log, config.request_timeout_secs)

    # Connection ---------------------------------------------------------------------------------

    async def _connect(self) -> None:
        await self._link.connect()
        # The instruments, so that reconciliation can build what it finds even without a data client.
        for instrument in map(loads, (await self._link.request(lambda i: v.QueryInstruments(request_id=i))).items or []):
            self._cache.add_instrument(instrument)
        await self._update_account()

    async def _disconnect(self) -> None:
        await self._link.close()

    async def _request(self, request: type, **fields) -> v.Reply:
        return await self._link.request(lambda i: request(request_id=i, account_id=self.account_id.value, **fields))

    # Commands: all go to the venue as they are ---------------------------------------------------

    async def _submit_order(self, command: SubmitOrder) -> None:
        await self._submit(command, [command.order])

    async def _submit_order_list(self, command: SubmitOrderList) -> None:
        await self._submit(command, command.order_list.orders)

    async def _submit(self, command, orders) -> None:
        for order in orders:
            self.generate_order_submitted(order.strategy_id, order.instrument_id, order.client_order_id,
                                          self._clock.timestamp_ns())
        try:
            await self._request(v.Execute, command=_as_the_venue_needs_it(command, orders))
        except VenueTimeout as exc:
            # Unanswered is not refused: the venue may still carry it out. The orders stay in flight
            # and NautilusTrader's in-flight check asks the venue what became of them.
            self._log.warning(f"submit of {[str(o.client_order_id) for o in orders]} unanswered ({exc}); "
                              "the in-flight check will ask")
        except VenueError as exc:  # refused by the venue: the orders are not working
            for order in orders:
                self.generate_order_rejected(order.strategy_id, order.instrument_id, order.client_order_id, str(exc),
                                             self._clock.timestamp_ns())

    async def _modify_order(self, command) -> None:
        await self._execute(command, lambda why: self.generate_order_modify_rejected(
            command.strategy_id, command.instrument_id, command.client_order_id, command.venue_order_id, why,
            self._clock.timestamp_ns()))

    async def _cancel_order(self, command) -> None:
        await self._execute(command, lambda why: self.generate_order_cancel_rejected(
            command.strategy_id, command.instrument_id, command.client_order_id, command.venue_order_id, why,
            self._clock.timestamp_ns()))

    async def _cancel_all_orders(self, command) -> None:
        await self._execute(command, lambda why: self._fault(f"cancel of all {command.instrument_id} orders failed: {why}"))

    async def _batch_cancel_orders(self, command) -> None:
        for cancel in command.cancels:
            await self._cancel_order(cancel)

    async def _execute(self, command, refused) -> None:
        """Sends the command; refused(reason) if the venue will not take it."""
        try:
            await self._request(v.Execute, command=dumps(command))
        except VenueError as exc:
            refused(str(exc))

    async def _query_account(self, command) -> None:
        await self._update_account()

    async def _update_account(self) -> None:
        account = loads((await self._request(v.QueryAccount)).items[0])
        self.generate_account_state(balances=account.balances, margins=account.margins, reported=True,
                                    ts_event=self._clock.timestamp_ns())

    # Events from the venue ----------------------------------------------------------------------

    def _on_venue_event(self, message: v.OrderEvent) -> None:
        event = loads(message.event)
        if self._cache.order(event.client_order_id) is None:
            # From before a restart, or not yet reconciled: the engine reconciles it, never drops it.
            self.create_task(self._report_unknown(event))
            return
        self._send_order_event(event)

    async def _report_unknown(self, event) -> None:
        for report in await self._reports("orders", client_order_id=event.client_order_id.value):
            self._send_order_status_report(report)

    # Reconciliation: the venue's books are the truth ---------------------------------------------

    async def generate_order_status_report(self, command) -> OrderStatusReport | None:
        query = ({"client_order_id": command.client_order_id.value} if command.client_order_id is not None
                 else {"venue_order_id": command.venue_order_id.value if command.venue_order_id else ""})
        reports = await self._reports("orders", **query)
        return reports[0] if reports else None

    async def generate_order_status_reports(self, command) -> list[OrderStatusReport]:
        return await self._reports("orders", open_only=command.open_only, instrument_id=_str(command.instrument_id))

    async def generate_fill_reports(self, command) -> list[FillReport]:
        return await self._reports(
            "fills", instrument_id=_str(command.instrument_id), venue_order_id=_str(command.venue_order_id),
            since_ns=command.start.value if command.start is not None else 0,
        )

    async def generate_position_status_reports(self, command) -> list[PositionStatusReport]:
        return await self._reports("positions", instrument_id=_str(command.instrument_id))

    async def _reports(self, kind: str, **query) -> list:
        reply = await self._request(v.QueryReports, kind=kind, **query)
        return [loads(r) for r in reply.items or []]

    # Faults -------------------------------------------------------------------------------------

    def _fault(self, text: str) -> None:
        self._log.error(text)
        report_fault(self._msgbus, f"{self.id}: {text}")

    def _on_task_completed(self, actions, success_msg, success_color, task) -> None:
        super()._on_task_completed(actions, success_msg, success_color, task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._fault(f"{task.get_name()} failed: {type(exc).__name__}: {exc}")


def _as_the_venue_needs_it(command, orders) -> msgspec.Raw:
    """A submit with each order as it stands now, not as it was created (an execution algorithm
    shrinks its primary order before it submits the rest), and without the execution algorithm,
    which runs in the node and is nothing to the venue."""
    payload = msgspec.json.decode(bytes(dumps(command)))
    for init, order in zip(payload.get("orders") or [payload["order"]], orders, strict=True):
        init["quantity"] = str(order.quantity)
        for name in ("price", "trigger_price"):
            if name in init["options"] and getattr(order, name, None) is not None:
                init["options"][name] = str(getattr(order, name))
        init.update(exec_algorithm_id=None, exec_algorithm_params=None, exec_spawn_id=None)
    return msgspec.Raw(msgspec.json.encode(payload))


def _str(identifier) -> str | None:
    return None if identifier is None else identifier.value


class PaperExecClientFactory(LiveExecClientFactory):
    @staticmethod
    def create(loop, name: str, config: PaperExecClientConfig, msgbus, cache, clock):
        return PaperExecClient(loop, msgbus, cache, clock, config, name)
