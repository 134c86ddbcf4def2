"""The bridge's config file (TOML), validated field by field; every problem is one line.

    [telegram]
    token_file = "/etc/nsup/telegram.token"   # the bot's token from BotFather; mode 0600, or the bridge refuses
    chat_id = -1001234567890                  # where event messages go (a group, or a person's own chat)
    allowed_user_ids = [123456789]            # who may command the nodes; everyone else is ignored
    api_url = "https://api.telegram.org"      # the Bot API (a test points it at a fake)
    coalesce_secs = 60.0                      # per node and kind of event: the first at once, the rest counted
    outbox_size = 200                         # messages waiting while Telegram is slow or down; past it the oldest go
    poll_secs = 30                            # getUpdates' long poll

    [nodes]
    root = "/var/lib/nsup"                    # every directory under it is a node's state dir, named as the directory
    scan_secs = 2.0                           # how often new nodes (and restarted ones) are looked for
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated

import msgspec

from supervisor.config import ConfigError, read_toml, validated

Secs = Annotated[float, msgspec.Meta(gt=0, le=3600)]


class TelegramSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    token_file: str
    chat_id: int
    allowed_user_ids: Annotated[list[int], msgspec.Meta(min_length=1)]
    api_url: str = "https://api.telegram.org"
    coalesce_secs: Secs = 60.0
    outbox_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 200
    poll_secs: Annotated[int, msgspec.Meta(ge=0, le=50)] = 30


class NodesSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    root: str | None = None  # None: $NSUP_ROOT, else /var/lib/nsup (as nsupctl's host view)
    scan_secs: Secs = 2.0


class BridgeConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    telegram: TelegramSection
    nodes: NodesSection = NodesSection()


def load_config(path: Path) -> tuple[BridgeConfig, str]:
    """The config and the bot token, or ConfigError (supervisor.config's: one line, the field first)."""
    raw = read_toml(path)
    if "telegram" not in raw:
        raise ConfigError(f"{path}: no [telegram] table: the bridge is off unless configured (see README, Telegram)")
    config = validated(raw, BridgeConfig, str(path))
    if not config.telegram.api_url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ConfigError(f"{path}: telegram.api_url must be https (plain http only on loopback, for tests)")
    return config, read_token(Path(config.telegram.token_file))


def read_token(path: Path) -> str:
    """The bot token: a file only its owner may read (the token is the bot), holding one line."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            raise ConfigError(f"token file {path} has mode {mode:04o}: it must be 0600 (chmod 600 {path})")
        token = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(f"token file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"token file {path} cannot be read: {exc}") from None
    if not token or any(c.isspace() for c in token):
        raise ConfigError(f"token file {path} must hold the bot token alone, on one line")
    return token
