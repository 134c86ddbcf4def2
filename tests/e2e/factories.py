"""Node factories for fault drills: the demo node, built slowly."""

import time

from node_worker.demo.node import demo_node


def slow_demo_node(build_delay_secs: float, **params):
    time.sleep(build_delay_secs)
    return demo_node(**params)
