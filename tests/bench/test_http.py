"""``selfex bench http`` with tiny sizes, on the session's servers: it runs, and every answer is right; its
constant-answer baseline is served by the bench's own app, never by the production gateway."""

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from bench.http import CONSTANT_PATH, app_with_constant
from services.gateway.app import create_app
from tests.support import TEST_ENCRYPTION_KEYS, TEST_HASH_SECRET


@pytest.mark.integration
async def test_the_http_bench_runs_end_to_end_and_checks_its_answers(servers, tmp_path):
    out = tmp_path / "bench.json"
    env = {
        **os.environ,
        "SELFEX_KAFKA_BOOTSTRAP": servers.kafka_bootstrap,
        "SELFEX_MONGO_URI": servers.mongo_uri,
        "SELFEX_KAFKA_IDEMPOTENCE": str(servers.idempotence).lower(),
        "SELFEX_KAFKA_SESSION_TIMEOUT_MS": str(servers.session_timeout_ms),
        "SELFEX_HASH_SECRET": TEST_HASH_SECRET,
        "SELFEX_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEYS,
        "SELFEX_ENCRYPTION_KEY_ID": "t1",
    }
    command = [
        str(Path(sys.executable).parent / "selfex"),
        "bench",
        "http",
        "--sizes",
        "200,400",
        "--concurrency",
        "4",
        "--seconds",
        "0.5",
        "--warmup",
        "0.2",
        "--rounds",
        "2",
        "--rate",
        "50",
        "--latency-seconds",
        "0.5",
        "--json",
        str(out),
    ]
    process = await asyncio.create_subprocess_exec(*command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 240)

    assert process.returncode == 0, output.decode()[-3000:]
    report = json.loads(out.read_text())
    assert list(report["sizes"]) == ["200", "400"]
    for figures in report["sizes"].values():
        for name in ("constant", "gamstop", "chipout_status", "store_lookup", "gamstop_at_rate"):
            assert figures[name]["requests"] > 0, name
            assert figures[name]["wrong_answers"] == 0, name
        assert len(figures["rounds"]) == 2
        assert figures["check_over_constant"] == min(figures["rounds"])  # the lower median of two
    assert "GAMSTOP check" in output.decode() and "check / constant" in output.decode()


def test_the_bench_app_answers_the_constant_right_after_the_checks_and_the_gateway_has_no_such_route():
    def api_paths(app) -> list[str]:
        return [route.path for route in app.router.routes if isinstance(route, APIRoute)]

    bench_paths = api_paths(app_with_constant())
    assert set(bench_paths[:3]) == {"/", "/gamstop/v2", "/gamstop/v2/batch"}
    assert bench_paths[3] == CONSTANT_PATH, "routing reaches it as it reaches the checks"
    assert bench_paths[:3] + bench_paths[4:] == api_paths(create_app())
