"""nsup and the worker end with os._exit, which skips ZeroMQ's context termination, and with it the
sockets' linger: a message still queued was lost. In CI, an approved abort's answer was (the Telegram
bridge heard "the peer closed the connection"). Each exit now sends what is queued first; this sends
a message large enough that without that it is cut off nearly every time (19 in 20, measured)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import zmq

EXITS = {  # imported first, so that the exit follows the send at once
    "nsup": ("from supervisor.cli import _leave", "_leave(0)"),
    "worker": ("from types import SimpleNamespace as N; from node_worker.worker import _exit_now",
               "_exit_now(N(kernel=N()), None)"),
}
MESSAGE_BYTES = 4_000_000

CHILD = """
import sys, zmq, zmq.asyncio
{load}
socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
socket.connect(sys.argv[1])
socket.send(b"x" * {size}, flags=zmq.NOBLOCK)
socket.close(linger=5000)
{leave}
"""


@pytest.mark.parametrize("who", sorted(EXITS))
def test_what_is_queued_at_exit_reaches_the_peer(who, tmp_path):
    router = zmq.Context.instance().socket(zmq.ROUTER)
    endpoint = f"ipc://{tmp_path / 'exit.sock'}"
    router.bind(endpoint)
    try:
        child = subprocess.run([sys.executable, "-c", CHILD.format(size=MESSAGE_BYTES, load=EXITS[who][0], leave=EXITS[who][1]), endpoint],
                               capture_output=True, text=True, timeout=60)
        assert child.returncode == 0, child.stderr
        assert router.poll(5000), f"{who}: the message queued before its exit never arrived"
        _, message = router.recv_multipart()
        assert len(message) == MESSAGE_BYTES
    finally:
        router.close(linger=0)
