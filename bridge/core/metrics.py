"""Prometheus metrics of one bridge (its own registry, so several can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """Every metric the bridge exports at `/metrics`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.callbacks = Counter(
            "bridge_callbacks",
            "NusaSMS callbacks received, by kind and outcome",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "bridge_queue_depth", "Messages waiting, by queue", ["queue"], registry=self.registry
        )
        self.oldest_waiting = Gauge(
            "bridge_oldest_waiting_seconds",
            "Age of the oldest waiting message, by queue",
            ["queue"],
            registry=self.registry,
        )
        self.send_seconds = Histogram(
            "bridge_send_seconds",
            "Latency of one send, by target (telegram post, nusasms reply)",
            ["target"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.api_errors = Counter(
            "bridge_api_errors",
            "Errors from the remote APIs, by service and kind",
            ["service", "kind"],
            registry=self.registry,
        )
        self.balance = Gauge(
            "bridge_nusasms_balance",
            "NusaSMS balances from GET /balance, by field",
            ["field"],
            registry=self.registry,
        )

        self._callback_children: dict[tuple[str, str], Counter] = {}

    def callback(self, kind: str, outcome: str) -> Counter:
        """The callbacks counter for one kind and outcome (cached: it is on the hot path)."""
        key = (kind, outcome)
        child = self._callback_children.get(key)
        if child is None:
            child = self._callback_children[key] = self.callbacks.labels(kind, outcome)
        return child

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
