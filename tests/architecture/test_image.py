"""The container image ships the composition root, the ground and the services, never the benchmarks."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_image_copies_selfex_shared_and_services_and_not_bench():
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE))
    assert copied == {"selfex", "shared", "services"}
    assert "bench" in (ROOT / ".dockerignore").read_text().split(), "bench/ stays out of the build context too"
