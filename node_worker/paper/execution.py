"""Orders to the paper venue, its events back as NautilusTrader order events, and reconciliation
answered from the venue's own books, so that a node restarted after kill -9 sees what it held."""

from __future__ import annotations

from decimal import Decimal

from nautilus_trader.common.providers import InstrumentProvider
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.reports import FillReport, OrderStatusReport, PositionStatusReport
from nautilus_trader.live.config import LiveExecClientConfig
from nautilus_trader.live.execution_client import LiveExecutionClient
from nautilus_trader.live.factories import LiveExecClientFactory
from nautilus_trader.model.enums import (
    AccountType,
    LiquiditySide,
    OmsType,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionSide,
    TimeInForce,
)
from nautilus_trader.model.identifiers import AccountId, ClientId, ClientOrderId, InstrumentId, TradeId, Venue, VenueOrderId
from nautilus_trader.model.objects import AccountBalance, Currency, Money, Price, Quantity

from node_worker.paper.venue_link import VenueError, VenueLink, VenueTimeout
from paper_venue import protocol as v


class PaperExecClientConfig(LiveExecClientConfig, frozen=True, kw_only=True):
    endpoint: str
    account_id: str = "SIM-001"
    request_timeout_secs: float = 5.0


class PaperExecClient(LiveExecutionClient):
    def __init__(self, loop, msgbus, cache, clock, config: PaperExecClientConfig, name: str):
        super().__init__(
            loop=loop, client_id=ClientId(name), venue=Venue(v.VENUE), oms_type=OmsType.NETTING,
            account_type=AccountType.MARGIN, base_currency=None, instrument_provider=InstrumentProvider(),
            msgbus=msgbus, cache=cache, clock=clock,
        )
        self._set_account_id(AccountId(config.account_id))
        self._link = VenueLink(config.endpoint, config.account_id, self._on_venue_event, self._log, config.request_timeout_secs)

    # Connection ---------------------------------------------------------------------------------

    async def _connect(self) -> None:
        await self._link.connect()
        account = await self._link.request(lambda i: v.QueryAccount(request_id=i))
        balances = [
            AccountBalance(Money(b.total, Currency.from_str(b.currency)), Money(b.locked, Currency.from_str(b.currency)),
                           Money(b.free, Currency.from_str(b.currency)))
            for b in account.balances
        ]
        self.generate_account_state(balances=balances, margins=[], reported=True, ts_event=self._clock.timestamp_ns())

    async def _disconnect(self) -> None:
        await self._link.close()

    # Commands -----------------------------------------------------------------------------------

    async def _submit_order(self, command) -> None:
        order = command.order
        self.generate_order_submitted(order.strategy_id, order.instrument_id, order.client_order_id, self._clock.timestamp_ns())
        submit = lambda i: v.Submit(  # noqa: E731
            request_id=i, client_order_id=order.client_order_id.value, strategy_id=order.strategy_id.value,
            instrument_id=order.instrument_id.value, side=order.side_string(), order_type=order.type_string(),
            quantity=str(order.quantity), price=str(order.price) if order.has_price else None,
            time_in_force=order.tif_string(), reduce_only=order.is_reduce_only,
        )
        try:
            await self._link.request(submit)
        except VenueTimeout as exc:
            # Unanswered is not refused: the venue may still carry it out. The order stays in flight
            # and NautilusTrader's in-flight check asks the venue what became of it.
            self._log.warning(f"submit of {order.client_order_id} unanswered ({exc}); the in-flight check will ask")
        except VenueError as exc:  # refused by the venue: the order is not working
            self.generate_order_rejected(order.strategy_id, order.instrument_id, order.client_order_id, str(exc),
                                         self._clock.timestamp_ns())

    async def _cancel_order(self, command) -> None:
        try:
            await self._link.request(lambda i: v.Cancel(request_id=i, client_order_id=command.client_order_id.value))
        except VenueError as exc:
            self.generate_order_cancel_rejected(command.strategy_id, command.instrument_id, command.client_order_id,
                                                command.venue_order_id, str(exc), self._clock.timestamp_ns())

    async def _cancel_all_orders(self, command) -> None:
        for order in self._cache.orders_open(instrument_id=command.instrument_id, strategy_id=command.strategy_id):
            if command.order_side in (OrderSide.NO_ORDER_SIDE, order.side):
                try:
                    await self._link.request(lambda i, o=order: v.Cancel(request_id=i, client_order_id=o.client_order_id.value))
                except VenueError as exc:
                    self._log.warning(f"cancel of {order.client_order_id} failed: {exc}")

    async def _modify_order(self, command) -> None:
        modify = lambda i: v.Modify(  # noqa: E731
            request_id=i, client_order_id=command.client_order_id.value,
            quantity=str(command.quantity) if command.quantity else None, price=str(command.price) if command.price else None,
        )
        try:
            await self._link.request(modify)
        except VenueError as exc:
            self.generate_order_modify_rejected(command.strategy_id, command.instrument_id, command.client_order_id,
                                                command.venue_order_id, str(exc), self._clock.timestamp_ns())

    # Events from the venue ----------------------------------------------------------------------

    def _on_venue_event(self, event: v.Event) -> None:
        client_order_id = ClientOrderId(event.order.client_order_id if hasattr(event, "order") else event.client_order_id)
        order = self._cache.order(client_order_id)
        if order is None:
            self._report_unknown(event)  # from before a restart: the engine reconciles it, never drops it
            return
        ids = (order.strategy_id, order.instrument_id, client_order_id)
        match event:
            case v.OrderAccepted(order=state):
                self.generate_order_accepted(*ids, VenueOrderId(state.venue_order_id), state.ts_accepted)
            case v.OrderRejected(reason=reason, ts=ts):
                self.generate_order_rejected(*ids, reason, ts)
            case v.OrderFilled(order=state, fill=fill):
                instrument = self._cache.instrument(order.instrument_id)
                self.generate_order_filled(
                    *ids, VenueOrderId(state.venue_order_id), None, TradeId(fill.trade_id), order.side, order.order_type,
                    Quantity.from_str(fill.quantity), Price.from_str(fill.price), instrument.quote_currency,
                    Money(fill.commission, Currency.from_str(fill.currency)), LiquiditySide.TAKER, fill.ts,
                )
            case v.OrderCanceled(order=state):
                self.generate_order_canceled(*ids, VenueOrderId(state.venue_order_id), state.ts_last)
            case v.OrderUpdated(order=state):
                self.generate_order_updated(
                    *ids, VenueOrderId(state.venue_order_id), Quantity.from_str(state.quantity),
                    Price.from_str(state.price) if state.price else None, None, state.ts_last,
                )
            case v.CommandRejected(command="cancel", reason=reason, ts=ts):
                self.generate_order_cancel_rejected(*ids, order.venue_order_id, reason, ts)
            case v.CommandRejected(reason=reason, ts=ts):
                self.generate_order_modify_rejected(*ids, order.venue_order_id, reason, ts)

    def _report_unknown(self, event: v.Event) -> None:
        state = getattr(event, "order", None)
        if state is None:
            return  # a rejection or a refused cancel of an order the node never had: nothing is open
        self._send_order_status_report(self._order_report(state))
        if isinstance(event, v.OrderFilled):
            self._send_fill_report(self._fill_report(event.fill))

    # Reconciliation: the venue's books are the truth ---------------------------------------------

    async def generate_order_status_report(self, command) -> OrderStatusReport | None:
        if command.client_order_id is not None:
            reply = await self._link.request(lambda i: v.QueryOrders(request_id=i, client_order_id=command.client_order_id.value))
            found = reply.orders
        else:  # by venue order id: the venue is asked for all and searched
            reply = await self._link.request(lambda i: v.QueryOrders(request_id=i))
            found = [o for o in reply.orders if command.venue_order_id and o.venue_order_id == command.venue_order_id.value]
        return self._order_report(found[0]) if found else None

    async def generate_order_status_reports(self, command) -> list[OrderStatusReport]:
        reply = await self._link.request(lambda i: v.QueryOrders(request_id=i, open_only=command.open_only))
        return [self._order_report(o) for o in reply.orders
                if command.instrument_id is None or o.instrument_id == command.instrument_id.value]

    async def generate_fill_reports(self, command) -> list[FillReport]:
        since = int(command.start.timestamp() * 1e9) if command.start else 0
        reply = await self._link.request(lambda i: v.QueryFills(request_id=i, since_ts=since))
        return [self._fill_report(f) for f in reply.fills
                if command.instrument_id is None or f.instrument_id == command.instrument_id.value]

    async def generate_position_status_reports(self, command) -> list[PositionStatusReport]:
        reply = await self._link.request(lambda i: v.QueryPositions(request_id=i))
        now = self._clock.timestamp_ns()
        return [
            PositionStatusReport(
                account_id=self.account_id, instrument_id=InstrumentId.from_str(p.instrument_id),
                position_side=PositionSide[p.side], quantity=Quantity.from_str(p.quantity), report_id=UUID4(),
                ts_last=p.ts, ts_init=now, avg_px_open=Decimal(p.avg_px) if p.side != "FLAT" else None,
            )
            for p in reply.positions
            if command.instrument_id is None or p.instrument_id == command.instrument_id.value
        ]

    def _fill_report(self, f: v.Fill) -> FillReport:
        return FillReport(
            account_id=self.account_id, instrument_id=InstrumentId.from_str(f.instrument_id),
            venue_order_id=VenueOrderId(f.venue_order_id), trade_id=TradeId(f.trade_id), order_side=OrderSide[f.side],
            last_qty=Quantity.from_str(f.quantity), last_px=Price.from_str(f.price),
            commission=Money(f.commission, Currency.from_str(f.currency)), liquidity_side=LiquiditySide.TAKER,
            report_id=UUID4(), ts_event=f.ts, ts_init=self._clock.timestamp_ns(), client_order_id=ClientOrderId(f.client_order_id),
        )

    def _order_report(self, o: v.OrderState) -> OrderStatusReport:
        return OrderStatusReport(
            account_id=self.account_id, instrument_id=InstrumentId.from_str(o.instrument_id),
            venue_order_id=VenueOrderId(o.venue_order_id), order_side=OrderSide[o.side], order_type=OrderType[o.order_type],
            time_in_force=TimeInForce[o.time_in_force], order_status=OrderStatus[o.status],
            quantity=Quantity.from_str(o.quantity), filled_qty=Quantity.from_str(o.filled_qty), report_id=UUID4(),
            ts_accepted=o.ts_accepted, ts_last=o.ts_last, ts_init=self._clock.timestamp_ns(),
            client_order_id=ClientOrderId(o.client_order_id), price=Price.from_str(o.price) if o.price else None,
            avg_px=Decimal(o.avg_px) if o.avg_px else None, reduce_only=o.reduce_only,
        )


class PaperExecClientFactory(LiveExecClientFactory):
    @staticmethod
    def create(loop, name: str, config: PaperExecClientConfig, msgbus, cache, clock):
        return PaperExecClient(loop, msgbus, cache, clock, config, name)
