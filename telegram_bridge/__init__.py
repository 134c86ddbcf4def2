"""nsup's Telegram bridge: a client of every node's control socket and event stream on the host.

It sends operators the events they care about (messages.py), coalesced, through a bounded outbox that
never holds up reading events (outbox.py), and carries allow-listed operators' commands to the nodes
(commands.py), abort and recover through nsup's own challenge. nsup itself knows nothing of Telegram.
"""
