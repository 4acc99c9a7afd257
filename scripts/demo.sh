#!/usr/bin/env bash
# The main job on a fresh Debian/Ubuntu machine, as root: install what is missing, build, and run
# the demo on the embedded default config (config/demo.yaml). Leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/src/cli/main.js demo "$@"
