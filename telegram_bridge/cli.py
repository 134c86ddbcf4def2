"""`nsup-telegram --config FILE`: the Telegram bridge, as a service (deploy/systemd/nsup-telegram.service).

Exit codes: 0 stopped (SIGTERM, SIGINT); 2 usage or config error, or a token the Bot API refuses (one
line, never a traceback: restarting cannot help).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from loguru import logger

EXIT_OK, EXIT_USAGE = 0, 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nsup-telegram", description="Telegram bridge for the nsup nodes on this host.")
    parser.add_argument("--config", type=Path, required=True, help="the bridge's TOML config (see README, Telegram)")
    args = parser.parse_args(argv)

    from supervisor.control.client.host import host_root
    from telegram_bridge.config import ConfigError, load_config

    try:
        config, token = load_config(args.config)
    except ConfigError as exc:
        print(f"nsup-telegram: {exc}", file=sys.stderr)
        return EXIT_USAGE

    from telegram_bridge.bridge import Bridge

    logger.remove()
    logger.add(sys.stderr, level="INFO", format="{time:YYYY-MM-DD HH:mm:ss.SSS} {level} {message}")
    bridge = Bridge(config, token)
    handlers = {sig: signal.signal(sig, lambda *_: bridge.stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
    logger.info("telegram: bridge for nodes under {}, allowed users {}", host_root(config.nodes.root),
                list(config.telegram.allowed_user_ids))
    try:
        bridge.run()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if bridge.fatal:
        logger.error("telegram: {}", bridge.fatal)
        print(f"nsup-telegram: {bridge.fatal}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
