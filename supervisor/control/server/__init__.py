"""nsup's side of the control socket: what listens, who may speak, what operators ask, what is published."""
