#!/bin/sh
# Install headless Chromium for the dashboard browser test (tests/management/test_dashboard_browser.py).
# Idempotent: does nothing when chromium is already on PATH.
set -eu
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(command -v chromium || echo /usr/bin/chromium)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
chromium --version || true
