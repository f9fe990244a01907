"""Prometheus metrics for the server: runs, their durations and sizes, and destination health.

Each ``Metrics`` has its own CollectorRegistry rather than prometheus-client's global one, so
several apps in one process (tests, or a server restarted in place) never clash over names.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Backups take from seconds (nothing changed) to hours (a first full run): 1 s to 6 h.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


class Metrics:
    """The server's metrics on a private registry; ``render`` serves them at /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter("multibackup_runs", "Finished runs, by outcome.",
                            ["organisation", "plan", "kind", "status"], registry=r)
        self.duration = Histogram("multibackup_run_duration_seconds",
                                  "Wall-clock duration of finished runs.",
                                  ["organisation", "plan", "kind"], buckets=DURATION_BUCKETS, registry=r)
        self.bytes_added = Counter("multibackup_backup_bytes_added",
                                   "Bytes newly stored by backups (after deduplication).",
                                   ["organisation", "plan"], registry=r)
        self.last_success = Gauge("multibackup_last_success_timestamp_seconds",
                                  "Unix time a plan last finished with status ok.",
                                  ["organisation", "plan"], registry=r)
        self.running = Gauge("multibackup_runs_running", "Runs executing now.", registry=r)
        self.queued = Gauge("multibackup_runs_queued", "Runs waiting for a worker.", registry=r)
        self.stored = Gauge("multibackup_destination_stored_bytes",
                            "Bytes stored at a destination.",
                            ["organisation", "destination"], registry=r)
        self.destination_success = Gauge(
            "multibackup_destination_last_success_timestamp_seconds",
            "Unix time a backup last reached a destination.",
            ["organisation", "destination"], registry=r)
        self.lagging = Gauge("multibackup_destination_lagging",
                             "1 if a destination is behind the others (missed recent runs).",
                             ["organisation", "destination"], registry=r)

    def observe_run(self, organisation: str, plan: str, kind: str, status: str,
                    duration: float, bytes_added: int, finished_at: float | None = None) -> None:
        """Count a finished run; a successful one also sets the plan's last-success time.

        ``finished_at`` (Unix time) defaults to now, as the scheduler reports runs as they end.
        """
        self.runs.labels(organisation, plan, kind, status).inc()
        self.duration.labels(organisation, plan, kind).observe(max(0.0, duration))
        if kind == "backup" and bytes_added > 0:
            self.bytes_added.labels(organisation, plan).inc(bytes_added)
        if status == "ok":
            gauge = self.last_success.labels(organisation, plan)
            if finished_at is None:
                gauge.set_to_current_time()
            else:
                gauge.set(finished_at)

    def set_running(self, n: int) -> None:
        """How many runs execute now."""
        self.running.set(n)

    def set_queued(self, n: int) -> None:
        """How many runs wait for a worker."""
        self.queued.set(n)

    def set_destination(self, organisation: str, destination: str, stored_bytes: int,
                        last_success: float | None, lagging: bool) -> None:
        """A destination's health; ``last_success`` is Unix time or None (never reached)."""
        self.stored.labels(organisation, destination).set(stored_bytes)
        if last_success is not None:
            self.destination_success.labels(organisation, destination).set(last_success)
        self.lagging.labels(organisation, destination).set(1 if lagging else 0)

    def forget_destination(self, organisation: str, destination: str) -> None:
        """Drop a deleted destination's series, so it does not linger as a stale value."""
        for gauge in (self.stored, self.destination_success, self.lagging):
            try:
                gauge.remove(organisation, destination)
            except KeyError:
                pass

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of the Prometheus text exposition."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
