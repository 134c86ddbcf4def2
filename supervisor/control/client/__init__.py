"""The asking side: nsupctl, the control client any script may use, and the Redis reader."""
