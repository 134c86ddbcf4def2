"""The NautilusTrader adapter for the paper venue (paper_venue/): a live data client for its
quotes and a live execution client for its orders, with reconciliation from the venue's books."""
