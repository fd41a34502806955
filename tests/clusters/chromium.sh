#!/usr/bin/env bash
# Debian's Chromium, headless, for the test that renders hpcexec report's HTML page and
# checks the picture (tests/test_report_html.py). No daemon: start installs it (first time).
#
#   tests/clusters/chromium.sh start    install chromium unless it is there
#   tests/clusters/chromium.sh status   exit 0 if it is there
set -euo pipefail
HC_NAME=chromium
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

case "${1:-}" in
start) ensure_packages "chromium" /usr/bin/chromium ;;
status) [ -x /usr/bin/chromium ] && echo "chromium: $(/usr/bin/chromium --version 2>/dev/null)" ;;
*)
    echo "usage: $0 start|status" >&2
    exit 2
    ;;
esac
