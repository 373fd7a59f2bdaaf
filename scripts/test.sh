#!/usr/bin/env bash
# The test suite as the README runs it: set-up (idempotent), then pytest in the project's .venv.
# Extra arguments go to pytest (e.g. -k gpu, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest tests -v --durations=15 "$@"
