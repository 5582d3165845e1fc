"""`GET /metrics`: the gateway in Prometheus text (prometheus_client), for the site's monitoring.

This process's pulls (durations, bytes downloaded, conversions, failures) are counted as they
happen; the queue depth and per-image use (lookups, jobs, nodes, users, running jobs) are read
from the database at each scrape, so every gateway sharing one database reports the same
image figures. Who may read it is `gateway.metrics_access`: callers on the gateway host
(loopback), the gateway admins (munge credential), or either; it names private images, so it
is never public.
"""

from __future__ import annotations

import ipaddress
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest

from imagegw.store import Store



def loopback(host: str | None) -> bool:
    """Whether a peer address is this host's loopback (127.0.0.0/8, ::1)."""
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Metrics:
    """One registry per gateway (tests run several in one process)."""

    def __init__(self, store: Store, system: str, flush: Callable[[], None]):
        self.registry = CollectorRegistry(auto_describe=True)
        self.pull_seconds = Histogram("shifter_gateway_pull_seconds", "Duration of finished pulls",
                                      ["result"], registry=self.registry,
                                      buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf")))
        self.pull_bytes = Counter("shifter_gateway_pull_bytes", "Layer bytes downloaded by pulls",
                                  registry=self.registry)
        self.conversions = Counter("shifter_gateway_conversions", "Images converted to squashfs",
                                   registry=self.registry)
        self.failures = Counter("shifter_gateway_pull_failures", "Pulls that ended in FAILURE",
                                registry=self.registry)
        self.registry.register(_FromStore(store, system, flush))

    def pulled(self, seconds: float, downloaded: int, converted: bool) -> None:
        self.pull_seconds.labels(result="ready").observe(seconds)
        self.pull_bytes.inc(downloaded)
        if converted:
            self.conversions.inc()

    def failed(self, seconds: float, downloaded: int) -> None:
        self.pull_seconds.labels(result="failure").observe(seconds)
        self.pull_bytes.inc(downloaded)
        self.failures.inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _FromStore:
    """Queue depth and per-image use, read from the database at scrape time."""

    def __init__(self, store: Store, system: str, flush: Callable[[], None]):
        self.store, self.system, self.flush = store, system, flush

    def describe(self):
        return []

    def collect(self):
        self.flush()
        queue = GaugeMetricFamily("shifter_gateway_queue_depth", "Pulls queued or running (all gateways)")
        queue.add_metric([], self.store.active_count())
        yield queue
        families = {name: GaugeMetricFamily(f"shifter_image_{name}", text, labels=["image"]) for name, text in (
            ("lookups", "Lookups of the image"), ("jobs", "Jobs that used the image"),
            ("nodes", "Nodes the image was used on"), ("users", "Distinct users who looked it up or ran it"),
            ("running_jobs", "Jobs using the image now"), ("last_used_seconds", "Unix time of the last use"))}
        for (itype, key), u in sorted(self.store.usage(self.system).items()):
            label = [f"{itype}:{key}"]
            families["lookups"].add_metric(label, u.lookups)
            families["jobs"].add_metric(label, u.jobs)
            families["nodes"].add_metric(label, u.nodes)
            families["users"].add_metric(label, u.users)
            families["running_jobs"].add_metric(label, len(u.running_jobs))
            families["last_used_seconds"].add_metric(label, u.last_used)
        yield from families.values()
