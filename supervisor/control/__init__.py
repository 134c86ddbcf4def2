"""The operator's side: the control socket nsup serves, the events it publishes, and nsupctl."""
