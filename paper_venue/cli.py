"""`python -m paper_venue serve [options]` runs a venue; `python -m paper_venue drill [options]` switches a
running venue's drills. Parsing and the drill need no NautilusTrader: only serving imports it."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import zmq

from paper_venue import protocol as v
from paper_venue.launcher import endpoints_in

DEFAULT_INSTRUMENTS = ("EUR/USD", "GBP/USD")
DEFAULT_ACCOUNT = f"{v.VENUE}-001"


def main(argv: list[str] | None = None, prog: str = "python -m paper_venue") -> int:
    """Runs the venue until SIGTERM or SIGINT; exit 0 (1 if it could not bind, 2 on bad options). A
    leading "serve" is allowed, a leading "drill" drills. `prog`: how the caller was invoked, for the
    usage line (`nsup paper-venue` passes its own)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["drill"]:
        return drill(argv[1:], prog)
    return serve(argv[1:] if argv[:1] == ["serve"] else argv, prog)


def _endpoint(text: str) -> str:
    if not (text.startswith("ipc://") or text.startswith("tcp://127.0.0.1:")):
        raise argparse.ArgumentTypeError(f"{text!r}: only ipc:// or tcp://127.0.0.1:PORT")
    return text


def _account(text: str) -> tuple[str, str, bool]:
    """"ID[:OMS][:shared]" -> (id, OMS, shared); build_venue says what is wrong with the id or the OMS."""
    account_id, *rest = text.split(":")
    shared = bool(rest) and rest[-1].lower() == "shared"
    if shared:
        rest.pop()
    if len(rest) > 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ID[:OMS][:shared], e.g. {DEFAULT_ACCOUNT}:NETTING:shared")
    return account_id, rest[0].upper() if rest and rest[0] else "NETTING", shared


def serve(argv: list[str], prog: str = "python -m paper_venue") -> int:
    parser = argparse.ArgumentParser(prog=f"{prog} serve", description="Run the paper venue.")
    default, default_quotes = endpoints_in(Path("DIR"))
    parser.add_argument("--dir", help="where the default endpoints' ipc sockets go (default: a new temp dir)")
    parser.add_argument("--endpoint", type=_endpoint, help=f"requests (default {default})")
    parser.add_argument("--quotes-endpoint", type=_endpoint, help=f"market data (default {default_quotes})")
    parser.add_argument("--instruments", nargs="+", default=list(DEFAULT_INSTRUMENTS), metavar="SYMBOL",
                        help=f"what the venue lists (default {' '.join(DEFAULT_INSTRUMENTS)}); e.g. EUR/USD USD/JPY "
                             "BTCUSDT-PERP ETHUSDT-PERP AAPL MSFT")
    parser.add_argument("--account", type=_account, action="append", metavar="ID[:OMS][:shared]",
                        help=f"an account, NETTING (the default) or HEDGING, shared if several traders (nodes) use it "
                             f"at once; repeat for more (default {DEFAULT_ACCOUNT})")
    parser.add_argument("--interval-ms", type=int, default=100, help="one market step every this many ms")
    parser.add_argument("--history-secs", type=int, default=3600, help="bar history kept, and made up at start")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    if args.interval_ms <= 0 or args.history_secs <= 0:
        parser.error("--interval-ms and --history-secs must be > 0")
    endpoint, quotes_endpoint = args.endpoint, args.quotes_endpoint
    if not (endpoint and quotes_endpoint):  # a default is wanted: it lives in DIR
        directory = Path(args.dir or tempfile.mkdtemp(prefix="paper-venue-"))
        directory.mkdir(parents=True, exist_ok=True)
        default, default_quotes = endpoints_in(directory)
        endpoint, quotes_endpoint = endpoint or default, quotes_endpoint or default_quotes

    import asyncio

    from loguru import logger

    from paper_venue.server import build_venue, serve_until_signal

    logger.remove()
    logger.add(sys.stderr, level="INFO")
    accounts = args.account or [(DEFAULT_ACCOUNT, "NETTING", False)]
    try:
        venue = build_venue(args.instruments, {a: oms for a, oms, _ in accounts}, endpoint, quotes_endpoint,
                            args.interval_ms, args.seed, args.history_secs, frozenset(a for a, _, s in accounts if s))
    except ValueError as exc:
        print(f"paper venue: {exc}", file=sys.stderr)
        return 2
    print(f"paper venue: requests {endpoint}, market data {quotes_endpoint}", flush=True)
    try:
        asyncio.run(serve_until_signal(venue))
    except zmq.ZMQError as exc:
        logger.error(f"paper venue failed: {exc}")
        return 1
    return 0


def drill(argv: list[str] | None = None, prog: str = "python -m paper_venue") -> int:
    """Sends one SetFaults, or one HandTrade, and prints the reply. Exit 0 ok, 1 refused, 2 bad options,
    3 no answer."""
    on_off = {"on": True, "off": False}
    parser = argparse.ArgumentParser(prog=f"{prog} drill",
                                     description="Switch the venue's drills, or trade by hand.")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--reject-orders", choices=on_off)
    parser.add_argument("--ack-delay-ms", type=int)
    parser.add_argument("--reply-delay-ms", type=int)
    parser.add_argument("--drop-connection", action="store_true")
    parser.add_argument("--silent", choices=on_off)
    hand = parser.add_argument_group("trading by hand", "instead of switching drills: a market order on the "
                                                        "account, as a person at the venue would place it")
    hand.add_argument("--hand-trade", metavar="SIDE:INSTRUMENT:QUANTITY", help="e.g. BUY:EUR/USD.SIM:100000")
    hand.add_argument("--unseen", action="store_true", help="its events never reach the node")
    hand.add_argument("--account", metavar="ID", help="which account (default: the venue's only one)")
    parser.add_argument("--timeout-secs", type=float, default=5.0)
    args = parser.parse_args(argv)
    switched = args.drop_connection or any(x is not None for x in (args.reject_orders, args.ack_delay_ms,
                                                                    args.reply_delay_ms, args.silent))
    if args.hand_trade is not None:
        if switched:
            parser.error("--hand-trade goes alone: switch the drills in another call")
        request = _hand_trade(parser, args)
    elif args.unseen or args.account:
        parser.error("--unseen and --account go with --hand-trade")
    else:
        request = v.SetFaults(
            request_id=1, reject_orders=on_off.get(args.reject_orders), ack_delay_ms=args.ack_delay_ms,
            reply_delay_ms=args.reply_delay_ms, drop_connection=args.drop_connection or None,
            silent=on_off.get(args.silent),
        )
    ctx = zmq.Context()
    socket = ctx.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(args.endpoint)
    try:
        socket.send(v.encode(request))
        if not socket.poll(int(args.timeout_secs * 1000)):
            print(f"no reply from {args.endpoint} within {args.timeout_secs:g}s", file=sys.stderr)
            return 3
        reply = v.from_venue_decoder.decode(socket.recv())
        print(v.encode(reply).decode())
        return 0 if isinstance(reply, v.Reply) and reply.ok else 1
    finally:
        ctx.destroy(linger=0)


def _hand_trade(parser: argparse.ArgumentParser, args: argparse.Namespace) -> v.HandTrade:
    """The form is checked here; whether the venue lists the instrument and takes the quantity, there."""
    side, _, rest = args.hand_trade.partition(":")
    instrument, _, quantity = rest.rpartition(":")
    if side.upper() not in ("BUY", "SELL") or not instrument or not quantity:
        parser.error(f"--hand-trade {args.hand_trade!r}: expected SIDE:INSTRUMENT:QUANTITY, "
                     "e.g. BUY:EUR/USD.SIM:100000")
    return v.HandTrade(request_id=1, instrument_id=instrument, side=side.upper(), quantity=quantity,
                       seen=not args.unseen, account_id=args.account)
