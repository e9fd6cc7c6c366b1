#!/usr/bin/env bash
# Runs one anchor script of bench/anchors/ in its pinned Python environment,
# creating bench/anchors/.venv from requirements.txt on first use (pip from the
# package index only). Usage: bench/anchors/run.sh envs.py [script arguments]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
stamp="$venv/.requirements"
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
    command -v python3 >/dev/null || { echo "bench anchors need python3 with venv and pip (Debian: apt-get install python3-venv python3-pip)" >&2; exit 2; }
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --disable-pip-version-check -q -r "$here/requirements.txt" >&2
    cp "$here/requirements.txt" "$stamp"
fi
script="$1"
shift
exec "$venv/bin/python" "$here/$script" "$@"
