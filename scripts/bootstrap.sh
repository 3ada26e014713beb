#!/usr/bin/env bash
# Create .venv from the lock file (requirements.lock) and install this project into it.
# Called by `make install` (and so by `make run` / `make test`) when the lock file changed.
set -euo pipefail
cd "$(dirname "$0")/.."

python=$(scripts/find-python.sh)
echo "==> Using $python ($("$python" --version 2>&1))"
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)'; then
  rm -rf .venv
  "$python" -m venv .venv
fi
start=$(date +%s)
echo "==> Installing the locked dependencies into .venv (first time: a few minutes, about 3 GB)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24" "setuptools>=64" wheel
.venv/bin/python -m pip install --quiet --disable-pip-version-check --progress-bar off -r requirements.lock
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
echo "==> Dependencies installed in $(( $(date +%s) - start )) s"

# The console's browser test drives Debian's Chromium (nothing is downloaded by Playwright).
if [[ ! -x /usr/bin/chromium ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "==> Installing Debian's chromium for the console's browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: /usr/bin/chromium is missing; the console's browser test will be skipped." >&2
    echo "      Install it with: sudo apt-get install chromium" >&2
  fi
fi
