#!/usr/bin/env bash
# tnt's GPU acceptance run in one command (docs/gpu.md):
#   bash examples/gpu/acceptance.sh OUTDIR            # one GPU machine, about 8 minutes
#   bash examples/gpu/acceptance.sh OUTDIR --tiny     # the same parts at toy sizes on the CPU (CI)
# Runs this checkout's tnt (PYTHONPATH, no install) with $PYTHON, else the checkout's .venv, else python3.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$here/acceptance.py" "$@"
