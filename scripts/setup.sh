#!/usr/bin/env bash
# Creates .venv and installs what the studio needs; `--dev` adds the test tools and Chromium.
# Re-running is cheap: pip runs again only for a requirements file not installed as it is now.
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
# One stamp per requirements file and content, so a run without --dev after one with it
# (studio.sh after test.sh) finds everything it needs installed and installs nothing.
stamp_of() { echo ".venv/.installed-$1-$(sha256sum "$1" | cut -c1-16)"; }
args=()
missing=()
for f in "${files[@]}"; do
  if [ -f "$(stamp_of "$f")" ]; then
    args+=(-c "$f")  # installed already: its pins hold while the others install
  else
    args+=(-r "$f")
    missing+=("$f")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing Python packages into .venv (first run takes a few minutes)..."
  .venv/bin/python -m pip install --disable-pip-version-check -q "${args[@]}"
  for f in "${missing[@]}"; do
    rm -f ".venv/.installed-$f-"*  # the stamps of this file's older contents
    touch "$(stamp_of "$f")"
  done
fi

if [ $dev = 1 ] && [ ! -x /usr/bin/chromium ]; then
  echo "Installing Debian's chromium for the browser tests..."
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi
