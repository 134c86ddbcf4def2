"""The operator's surface. Both sides share the wire (protocol.py) and the commands (commands/: one
module per command, holding its request, what it asks of the lifecycle, what it does and how nsupctl
shows the answer); server/ runs inside nsup, client/ is nsupctl and anything else that asks."""
