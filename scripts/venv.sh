# Sourced by the other scripts: make sure .venv exists with Telltale installed ($1 = extras).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${TELLTALE_VENV:-$ROOT/.venv}
extras=${1:-}
stamp="$VENV/.telltale-installed${extras:+-$extras}"
if [[ ! -x $VENV/bin/python ]]; then
  echo "setup: creating $VENV" >&2
  python3 -m venv "$VENV"
fi
if [[ ! -f $stamp || $ROOT/pyproject.toml -nt $stamp ]]; then
  echo "setup: installing telltale${extras:+[$extras]} into $VENV (first time ~1 min)..." >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e "$ROOT${extras:+[$extras]}" >&2
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
