#!/usr/bin/env bash
# Creates .venv and installs what the studio needs; `--dev` adds the test tools and Chromium.
# Re-running is cheap: pip runs again only when a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
dev=0
[ "${1:-}" = "--dev" ] && dev=1

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "Portrait Studio needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version))." >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

files=(requirements.txt)
[ $dev = 1 ] && files+=(requirements-dev.txt)
stamp=".venv/.installed-$(cat "${files[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "Installing Python packages into .venv (first run takes a few minutes)..."
  args=()
  for f in "${files[@]}"; do args+=(-r "$f"); done
  .venv/bin/python -m pip install --disable-pip-version-check -q "${args[@]}"
  touch "$stamp"
fi

if [ $dev = 1 ] && [ ! -x /usr/bin/chromium ]; then
  echo "Installing Debian's chromium for the browser tests..."
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi
