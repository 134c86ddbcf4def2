# Sourced by scripts/demo and scripts/test: make .venv with Python >= 3.12 and install nsup into it.
# Safe to rerun: it reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
extras="${NSUP_EXTRAS:-}"

find_python() {
  local candidate
  for candidate in "${NSUP_PYTHON:-}" "$(command -v pyenv >/dev/null && pyenv which python3.12 2>/dev/null)" python3.12 python3.13 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  echo "nsup: needs Python >= 3.12 (set NSUP_PYTHON to one)" >&2; return 1
}

if [ ! -x "$venv/bin/python" ]; then
  "$(find_python)" -m venv "$venv"
fi
stamp="$venv/.nsup-installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ "$repo/pyproject.toml" -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e "$repo${extras:+[$extras]}"
  touch "$stamp"
fi
