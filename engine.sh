#!/usr/bin/env bash
# The engine's command line from any folder, with the project's Python: sets up .venv on the
# first run, then runs `python -m engine` with your arguments. It does not change folder, so
# relative paths mean what they mean where you are, e.g.
#   ./engine.sh models --models ~/ComfyUI/models
#   ./engine.sh render --tiny a.json b.png --outputs renders
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Setup says nothing when there is nothing to do; what it says goes to stderr, so stdout
# carries only the engine's JSON lines.
bash "$ROOT/scripts/setup.sh" >&2
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# -P: the current folder is not put on sys.path, so a folder of yours named `engine` (or
# anything else there) cannot stand in for the project's modules.
exec "$ROOT/.venv/bin/python" -P -m engine "$@"
