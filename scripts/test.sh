#!/usr/bin/env bash
# The test suite as the README runs it: set-up (idempotent), then pytest in the project's .venv.
# Tests run in one pytest-xdist worker per core (at most 4: each holds TensorFlow, ~2 GB); every test makes
# its own files under pytest's tmp_path, so workers share nothing. Idle workers steal queued tests
# (--dist worksteal): a few tests take a minute each, and a worker left with them ended the run last (the
# suite in 6 min 22 s against 6 min 49-53 s with the default scheduling, 7 min 41 s with --dist loadfile,
# measured the same evening). Extra arguments go to pytest (e.g. -k gpu, -x, or -n 0 for one process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .   # the lint (pyproject.toml's [tool.ruff]): a finding fails the run before the tests
exec .venv/bin/python -m pytest tests -v --durations=15 -n auto --maxprocesses 4 --dist worksteal "$@"
