"""The decisions bench's own code path with tiny sizes, so it cannot rot. It asserts that every
figure is printed, not what the figures are: speed is the bench's business, not a test's."""

import re

import pytest

from bench import decisions as bench

pytestmark = pytest.mark.integration

NUMBER = r"[\d,]+(?:\.\d+)?"
LATENCY = rf"p50 {NUMBER} ms, p95 {NUMBER} ms, p99 {NUMBER} ms \({NUMBER} answers, offered {NUMBER}/s\)"


def test_the_decisions_bench_runs_and_prints_every_figure(settings, monkeypatch, capsys):
    for name, value in {
        "SELFEX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SELFEX_MONGO_URI": settings.mongo_uri,
        "SELFEX_KAFKA_IDEMPOTENCE": str(settings.kafka_idempotence).lower(),
        "SELFEX_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
        "SELFEX_HASH_SECRET": settings.hash_secret.get_secret_value(),
        "SELFEX_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value(),
        "SELFEX_ENCRYPTION_KEY_ID": settings.encryption_key_id,
    }.items():
        monkeypatch.setenv(name, value)

    tiny = "--sizes 50,100 --events 200 --rounds 2 --accounts 50 --rate 200 --latency-seconds 1 --forwarders 2"
    code = bench.main(tiny.split())

    out = capsys.readouterr().out
    assert code == 0, out
    assert "servers: external" in out, "named servers are used as they are"
    assert "6 partitions per topic, 2 blocking instance(s), 2 bare forwarder(s)" in out, "blocking runs as deployed, two instances"
    for size in ("50", "100"):
        assert re.search(
            rf"\n{size} active exclusions: stored in {NUMBER} s; service ready in {NUMBER} s \(view loaded in {NUMBER} s\); "
            rf"service memory RSS {NUMBER} MB, all instances \(peak {NUMBER} MB\)\n"
            rf"  sustained decisions/s: {NUMBER} = \d+% of the bare forwarder's {NUMBER} msg/s \(medians; per round \d+%, \d+%\)\n"
            rf"  end-to-end latency at 200 events/s: blocking {LATENCY}; bare forwarder {LATENCY}\n"
            rf"  lookup in-process: decide {NUMBER} µs/event, view match {NUMBER} µs/event\n",
            out,
        ), out
    assert re.search(rf"lookup cost ratio 100 vs 50 exclusions: decide {NUMBER}, view match {NUMBER}; end-to-end p50 {NUMBER}", out), out
    assert "nan" not in out, "every figure was measured"
