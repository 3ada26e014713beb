#!/usr/bin/env bash
# Print the path of a Python 3.10 interpreter (Rasa 3.6 supports 3.8 to 3.10; we use 3.10).
# Order: $PYTHON, python3.10 on PATH, pyenv's 3.10.x, python3 if it is 3.10.
set -euo pipefail

is_310() { "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' >/dev/null 2>&1; }

if [[ -n "${PYTHON:-}" ]]; then
  if is_310 "$PYTHON"; then command -v "$PYTHON"; exit 0; fi
  echo "error: PYTHON=$PYTHON is not a working Python 3.10 interpreter" >&2; exit 1
fi
if command -v python3.10 >/dev/null && is_310 python3.10; then
  python3.10 -c 'import sys; print(sys.executable)'; exit 0
fi
if command -v pyenv >/dev/null; then
  version=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10(\.[0-9]+)?$' | sort -V | tail -n 1 || true)
  if [[ -n "$version" ]]; then
    candidate=$(PYENV_VERSION="$version" pyenv which python3.10 2>/dev/null || true)
    if [[ -n "$candidate" ]] && is_310 "$candidate"; then echo "$candidate"; exit 0; fi
  fi
fi
if command -v python3 >/dev/null && is_310 python3; then
  python3 -c 'import sys; print(sys.executable)'; exit 0
fi
cat >&2 <<'MSG'
error: no Python 3.10 interpreter found (Rasa 3.6 runs on Python 3.8-3.10 only).
Install one, then run the command again, for example:
  pyenv install 3.10          # with pyenv
  apt-get install python3.10 python3.10-venv   # on Debian/Ubuntu releases that ship it
or point PYTHON at an existing interpreter: make run PYTHON=/path/to/python3.10
MSG
exit 1
