"""The demo node: a synthetic quote feed, the sandbox venue SIM and a strategy that trades all the time."""
