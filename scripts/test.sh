#!/usr/bin/env bash
# Run the whole test suite: install Telltale and the real services, start them, run pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k kafka -x).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/venv.sh" dev
cd "$ROOT"

# Headless Chromium for the dashboard and report tests (Debian's packages; installed once).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "setup: installing chromium and chromium-driver with apt (first time ~1 min)..." >&2
  sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
  $sudo apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q \
    chromium chromium-driver fonts-dejavu-core >&2
fi

was_running=0
bash scripts/services.sh status >/dev/null 2>&1 && was_running=1
eval "$(bash scripts/services.sh start)"   # fails loudly if a service cannot start
[[ $was_running == 1 ]] || trap 'bash scripts/services.sh stop' EXIT

ruff check .
mypy  # the directories listed in pyproject.toml's [tool.mypy] files
set +e
python -m pytest "$@"
rc=$?
set -e
if [[ $rc == 5 ]]; then
  echo "test.sh: pytest collected no tests: that is a failure here" >&2
  rc=1
fi
exit $rc
