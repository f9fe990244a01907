"""Prometheus metrics: names, labels and values as rendered, on a private registry."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from multibackup.server.metrics import Metrics


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = m.render()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def test_rendered_metrics() -> None:
    m = Metrics()
    m.observe_run("acme", "web", "backup", "ok", 42.0, 1000, finished_at=1_800_000_000.0)
    m.observe_run("acme", "web", "backup", "failed", 3.0, 0)
    m.observe_run("acme", "web", "backup", "ok", 7200.0, 500, finished_at=1_800_003_600.0)
    m.set_running(2)
    m.set_queued(5)
    m.set_destination("acme", "s3", 123456, 1_800_000_000.0, False)
    m.set_destination("acme", "b2", 100, None, True)

    body, content_type = m.render()
    assert content_type.startswith("text/plain")
    text = body.decode()
    assert "# TYPE multibackup_run_duration_seconds histogram" in text
    got = samples(m)
    web = (("kind", "backup"), ("organisation", "acme"), ("plan", "web"))
    assert got[("multibackup_runs_total", tuple(sorted(web + (("status", "ok"),))))] == 2
    assert got[("multibackup_runs_total", tuple(sorted(web + (("status", "failed"),))))] == 1
    assert got[("multibackup_run_duration_seconds_count", web)] == 3
    assert got[("multibackup_run_duration_seconds_sum", web)] == 7245
    assert got[("multibackup_run_duration_seconds_bucket", tuple(sorted(web + (("le", "1.0"),))))] \
        == 0
    assert got[("multibackup_run_duration_seconds_bucket", tuple(sorted(web + (("le", "60.0"),))))] \
        == 2
    assert got[("multibackup_run_duration_seconds_bucket",
                tuple(sorted(web + (("le", "21600.0"),))))] == 3
    plan = (("organisation", "acme"), ("plan", "web"))
    assert got[("multibackup_backup_bytes_added_total", plan)] == 1500
    assert got[("multibackup_last_success_timestamp_seconds", plan)] == 1_800_003_600.0
    assert got[("multibackup_runs_running", ())] == 2
    assert got[("multibackup_runs_queued", ())] == 5
    s3 = (("destination", "s3"), ("organisation", "acme"))
    b2 = (("destination", "b2"), ("organisation", "acme"))
    assert got[("multibackup_destination_stored_bytes", s3)] == 123456
    assert got[("multibackup_destination_lagging", s3)] == 0
    assert got[("multibackup_destination_lagging", b2)] == 1
    assert got[("multibackup_destination_last_success_timestamp_seconds", s3)] == 1_800_000_000
    assert ("multibackup_destination_last_success_timestamp_seconds", b2) not in got

    m.forget_destination("acme", "b2")
    assert ("multibackup_destination_lagging", b2) not in samples(m)


def test_registries_are_separate() -> None:
    a, b = Metrics(), Metrics()  # no "Duplicated timeseries" error from a shared registry
    a.set_running(3)
    assert samples(a)[("multibackup_runs_running", ())] == 3
    assert samples(b)[("multibackup_runs_running", ())] == 0
