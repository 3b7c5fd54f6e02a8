#!/usr/bin/env python3
"""Container health check: GET the broker's /api/healthchecks/node; exit 0 only on 200 {"status":"ok"}.

Credentials: LEVERET_USERNAME / LEVERET_PASSWORD, else the default user's LEVERET_DEFAULT_USER /
LEVERET_DEFAULT_PASS, else guest/guest (which works from inside the container: loopback).
URL: LEVERET_HEALTH_URL (default http://127.0.0.1:15672/api/healthchecks/node). Standard library only.
"""

import base64
import json
import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = os.environ.get("LEVERET_HEALTH_URL", "http://127.0.0.1:15672/api/healthchecks/node")
    user = os.environ.get("LEVERET_USERNAME") or os.environ.get("LEVERET_DEFAULT_USER") or "guest"
    password = os.environ.get("LEVERET_PASSWORD") or os.environ.get("LEVERET_DEFAULT_PASS") or "guest"
    req = urllib.request.Request(url)
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: HTTP {exc.code} {exc.read()[:200]!r}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if body.get("status") != "ok":
        print(f"unhealthy: {body}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
