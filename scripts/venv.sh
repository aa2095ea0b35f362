# Sourced by the other scripts: make sure .venv exists with Telltale installed ($1 = extras).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${TELLTALE_VENV:-$ROOT/.venv}
extras=${1:-}
stamp="$VENV/.telltale-installed${extras:+-$extras}"
# pip's cache for wheels (PyTorch's CUDA build is ~3 GB with its nvidia-* wheels), shared by
# venvs, clones and CI runs on this machine where the index allows caching; a fresh
# `venv.sh dev` took 75 s here with an empty cache
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-${TELLTALE_CACHE:-$HOME/.cache/telltale}/pip}
if [[ ! -x $VENV/bin/python ]]; then
  echo "setup: creating $VENV" >&2
  python3 -m venv "$VENV"
fi
if [[ ! -f $stamp || $ROOT/pyproject.toml -nt $stamp ]]; then
  echo "setup: installing telltale${extras:+[$extras]} into $VENV (first time: minutes;" \
       "the dev extra brings PyTorch, Keras, Transformers, Lightning)..." >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e "$ROOT${extras:+[$extras]}" >&2
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
