"""``selfex bench enforcement`` at a tiny size on the session's servers, so it cannot rot. It asserts
that every figure was measured, not what the figures are: speed is the bench's business."""

import asyncio
import json
import sys
from pathlib import Path

import pytest

from bench.decisions import service_environment

pytestmark = pytest.mark.integration


async def test_the_enforcement_bench_runs_on_the_whole_stack_and_measures_every_figure(settings, tmp_path):
    out = tmp_path / "bench.json"
    env = service_environment(settings)  # the session's servers, named: the bench uses them as they are
    command = [
        str(Path(sys.executable).parent / "selfex"),
        "bench",
        "enforcement",
        "--exclusions",
        "1000",
        "--excluded",
        "20",
        "--rate",
        "5",
        "--flow",
        "100",
        "--accounts",
        "100",
        "--hops",
        "20",
        "--give-up",
        "20",
        "--restart-sizes",
        "1000",
        "--json",
        str(out),
    ]
    process = await asyncio.create_subprocess_exec(*command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 240)

    text = output.decode()
    assert process.returncode == 0, text[-3000:]
    report = json.loads(out.read_text())
    assert report["services"].count("blocking") == 2, "blocking runs as deployed, two instances"
    # Every request accepted: 201, or 202 past the 5 s bound (how many is the bench's figure, not the
    # test's: under the rest of the suite some wait longer); each effect is timed from every 201.
    answers = report["requests"]["answers"]
    assert set(answers) <= {"201", "202"} and sum(answers.values()) == 20 and answers.get("201", 0) >= 1, (answers, text[-3000:])
    for effect in ("gamstop", "block", "end_sessions"):
        figures = report[effect]
        assert figures["count"] == answers["201"] and figures["missing"] == 0, effect
        assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"] <= figures["max_ms"], effect
        assert figures["from_request"]["count"] == answers["201"], effect
    for step, figures in report["answer_breakdown"].items():  # where each request's time went, step by step
        assert figures["count"] == 20, step
    assert "where a request's time went" in text
    assert report["broker_hop"]["count"] == 20 and report["broker_hop"]["p99_ms"] > 0
    assert report["flow"]["offered_per_second"] > 0 and report["flow"]["decisions_per_second"] > 0
    [restart] = report["restarts"]
    assert restart["exclusions"] == 1000 and not restart["failed"] and restart["cold_s"] > 0 and restart["restart_s"] > 0
    for line in (
        "GAMSTOP check answers Y",
        "first account event BLOCKed",
        "end_sessions on enforcement",
        "a bare broker hop",
        "blocking with 1,000 exclusions (stored in",
    ):
        assert line in text, line
