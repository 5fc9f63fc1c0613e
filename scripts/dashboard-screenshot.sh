#!/usr/bin/env bash
# Regenerates docs/dashboard.png: the dashboard browser test, with its screenshot kept.
# Needs chromium and chromium-driver (apt-get install chromium chromium-driver).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs
DASHBOARD_SCREENSHOT="$PWD/docs/dashboard.png" \
    cargo test --release --locked --test it dashboard_in_chromium -- --exact \
    dashboard::dashboard_in_chromium_starts_follows_cancels_and_escapes
echo "wrote docs/dashboard.png"
