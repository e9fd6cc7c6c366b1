#!/usr/bin/env bash
# Runs one anchor script of bench/anchors/ in its pinned Python environment, creating
# that environment on first use (pip from the package index only):
#   envs.py              -> bench/anchors/.venv       from requirements.txt
#   train.py, attention.py -> bench/anchors/.venv-torch from requirements-torch.txt
# Usage: bench/anchors/run.sh SCRIPT [script arguments]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
script="$1"
shift
case "$script" in
    train.py | attention.py) requirements="$here/requirements-torch.txt" venv="$here/.venv-torch" ;;
    *) requirements="$here/requirements.txt" venv="$here/.venv" ;;
esac
stamp="$venv/.requirements"
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
    command -v python3 >/dev/null || { echo "bench anchors need python3 with venv and pip (Debian: apt-get install python3-venv python3-pip)" >&2; exit 2; }
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --disable-pip-version-check -q -r "$requirements" >&2
    cp "$requirements" "$stamp"
fi
exec "$venv/bin/python" "$here/$script" "$@"
