"""The deployment files in the repository: the container health check against a real broker, and the
Docker image where a Docker daemon is available (systemd's unit: tests/e2e/test_sdnotify.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ThreadBroker

ROOT = Path(__file__).resolve().parents[2]
HEALTHCHECK = ROOT / "packaging" / "healthcheck.py"


def healthcheck(url: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEVERET_")}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)], capture_output=True, text=True, timeout=30,
        env={**clean, "LEVERET_HEALTH_URL": url, **env},
    )  # fmt: skip


def test_healthcheck_script() -> None:
    b = ThreadBroker(http_port=0).start()
    try:
        url = f"http://127.0.0.1:{b.app.http_port}/api/healthchecks/node"
        ok = healthcheck(url)  # guest from loopback, as inside a container
        assert ok.returncode == 0, ok.stderr
        wrong = healthcheck(url, LEVERET_USERNAME="guest", LEVERET_PASSWORD="nope")
        assert wrong.returncode == 1 and "HTTP 401" in wrong.stderr
        port = b.app.http_port
    finally:
        b.stop()
    down = healthcheck(f"http://127.0.0.1:{port}/api/healthchecks/node")
    assert down.returncode == 1 and "unhealthy" in down.stderr


def _docker_reason() -> str | None:
    if shutil.which("docker") is None:
        return "docker is not installed"
    p = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        return "no Docker daemon reachable (docker info: " + (p.stderr.strip().splitlines() or ["?"])[-1] + ")"
    return None


def test_docker_image_builds_and_runs_as_non_root() -> None:
    reason = _docker_reason()
    if reason is not None:
        pytest.skip(reason)
    tag = "leveret-test:ci"
    build = subprocess.run(["docker", "build", "-t", tag, str(ROOT)], capture_output=True, text=True, timeout=900)
    if build.returncode != 0 and ("pull access denied" in build.stderr or "failed to resolve" in build.stderr
                                  or "dial tcp" in build.stderr):  # fmt: skip
        pytest.skip("the base image cannot be pulled here: " + build.stderr.strip().splitlines()[-1])
    assert build.returncode == 0, build.stderr[-3000:]
    user = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert user.stdout.strip() == "10001", user
    version = subprocess.run(["docker", "run", "--rm", "--entrypoint", "leveret", tag, "server", "--help"],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert version.returncode == 0 and "--data-dir" in version.stdout
