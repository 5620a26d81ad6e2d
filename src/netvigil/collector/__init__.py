"""The measurement collector: an HTTP API in front of a durable, tamper-evident evidence log."""
