#!/usr/bin/env bash
# Run the whole test suite: install Telltale and the real services, start them, run pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k kafka -x).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/venv.sh" dev
cd "$ROOT"

was_running=0
bash scripts/services.sh status >/dev/null 2>&1 && was_running=1
eval "$(bash scripts/services.sh start)"   # fails loudly if a service cannot start
[[ $was_running == 1 ]] || trap 'bash scripts/services.sh stop' EXIT

ruff check .
set +e
python -m pytest "$@"
rc=$?
set -e
if [[ $rc == 5 ]]; then
  echo "test.sh: pytest collected no tests: that is a failure here" >&2
  rc=1
fi
exit $rc
