"""NautilusTrader objects on the paper venue's wire: their own to_dict() as JSON, tagged with the class,
through NautilusTrader's MsgSpecSerializer. The venue and the adapter both use this, and nothing else."""

from __future__ import annotations

import msgspec
from nautilus_trader.serialization.serializer import MsgSpecSerializer

_serializer = MsgSpecSerializer(msgspec.json)


class Undecodable(ValueError):
    """Not a NautilusTrader object the wire carries."""


def dumps(obj) -> msgspec.Raw:
    """The object's JSON, to embed in a protocol message as is."""
    return msgspec.Raw(_serializer.serialize(obj))


def loads(raw: msgspec.Raw | bytes):
    """The NautilusTrader object back; Undecodable says why not."""
    try:
        obj = _serializer.deserialize(bytes(raw))
    except Exception as exc:  # the from_dict functions raise whatever a bad field makes them raise
        raise Undecodable(f"not a NautilusTrader object: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, dict):
        raise Undecodable(f"not a NautilusTrader object: unknown type {obj.get('type')!r}")
    return obj
