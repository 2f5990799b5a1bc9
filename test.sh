#!/usr/bin/env bash
# Quick start 2: set up (venv, requirements, Debian chromium) and run every test.
# Extra arguments go to pytest, e.g. ./test.sh -k color
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh --dev
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
export TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1

.venv/bin/ruff check .
.venv/bin/ruff format --check .
set +e
.venv/bin/python -m pytest -q "$@"
status=$?
set -e
if [ $status = 5 ]; then
  echo "pytest collected no tests: that is a failure." >&2
  exit 1
fi
exit $status
