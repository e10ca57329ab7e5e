"""The audit bench's own code path with tiny sizes, so it cannot rot. It asserts that every figure is
printed, not what the figures are: speed is the bench's business, not a test's."""

import re

import pytest

from bench import audit as bench

pytestmark = pytest.mark.integration

NUMBER = r"[\d,]+(?:\.\d+)?"
LAG = rf"lag p50 {NUMBER} ms, p99 {NUMBER} ms, max {NUMBER} ms \({NUMBER} records\)"


def test_the_audit_bench_runs_and_prints_every_figure(settings, monkeypatch, capsys):
    for name, value in {
        "SELFEX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SELFEX_MONGO_URI": settings.mongo_uri,
        "SELFEX_KAFKA_IDEMPOTENCE": str(settings.kafka_idempotence).lower(),
        "SELFEX_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
        "SELFEX_KAFKA_LEAVE_GROUP_ON_STOP": str(settings.kafka_leave_group_on_stop).lower(),
        "SELFEX_HASH_SECRET": settings.hash_secret.get_secret_value(),
        "SELFEX_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value(),
        "SELFEX_ENCRYPTION_KEY_ID": settings.encryption_key_id,
    }.items():
        monkeypatch.setenv(name, value)

    code = bench.main(
        [
            "--rate",
            "100",
            "--seconds",
            "1",
            "--events",
            "300",
            "--bare",
            "500",
            "--verify-records",
            "3000",
            "--partitions",
            "2",
            "--query-records",
            "400",
        ]
    )

    out = capsys.readouterr().out
    assert code == 0, out
    assert "servers: external" in out, "named servers are used as they are"
    assert re.search(rf"store's bare batched insert: {NUMBER} records/s \(500 audit-shaped records", out), out
    assert re.search(
        rf"at 100 account events/s \+ their decisions \(200 records/s offered, 1 s\): appended {NUMBER} records/s; {LAG}", out
    ), out
    assert re.search(
        rf"at the maximum \(300 account events.*appended {NUMBER} records/s = \d+% of the store's bare batched insert; {LAG}", out
    ), out
    assert re.search(
        rf"selfex audit verify over 3,000 records: {NUMBER} s wall, exit 0: intact: 3000 records in 2 chains verified in {NUMBER} s", out
    ), out
    assert re.search(rf"400 records appended in {NUMBER} s for the query timings", out), out
    for what in ("second page of 100 decisions", "a person's statement", "export of every decision", "statistics over the whole log"):
        assert re.search(rf"  {what}.*: {NUMBER} ms \(", out), out
    assert "nan" not in out, "every figure was measured"
