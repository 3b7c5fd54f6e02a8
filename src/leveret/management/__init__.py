"""Management on top of the broker: HTTP API, Prometheus metrics, dashboard. Reads model snapshots only."""
