#!/usr/bin/env bash
# Quick start 1: set up (first run only) and start the studio. Flags go to app.py, e.g.
#   ./studio.sh --tiny                      demo with tiny random models
#   ./studio.sh --models ~/ComfyUI/models   your ComfyUI models folder
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
exec .venv/bin/python app.py "$@"
