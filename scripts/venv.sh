#!/bin/bash
# scripts/venv.sh REQUIREMENTS: make ./venv (the virtualenv Pulumi.yaml names)
# hold REQUIREMENTS; reinstalls only when the file changed since last time.
set -euo pipefail
cd "$(dirname "$0")/.."
req=${1:-requirements.txt}
python=${PYTHON:-python3}
if [ ! -x venv/bin/python ]; then
  "$python" -m venv venv
fi
stamp="venv/.installed-$(basename "$req")"
want=$(cat requirements*.txt scaler/requirements*.txt 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  venv/bin/python -m pip install -q --disable-pip-version-check -r "$req" >&2
  echo "$want" >"$stamp"
fi
