"""Check cloud-config documents with Debian's own cloud-init.

`cloud-init schema` accepts a misspelt top-level key (it is just unknown),
so the keys are also checked against the modules cloud-init ships.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

# cloud-init is a Debian package of the system Python, not of our venv.
SYSTEM_PYTHON = "/usr/bin/python3"


@functools.cache
def module_keys() -> frozenset[str]:
    code = (
        "import json\n"
        "from cloudinit.config.schema import get_schema\n"
        "s = get_schema()['$defs']\n"
        "keys = set()\n"
        "for name, d in s.items():\n"
        "    if name.startswith('cc_') or name == 'base_config':\n"
        "        keys |= set(d.get('properties', {}))\n"
        "print(json.dumps(sorted(keys)))\n"
    )
    out = subprocess.run([SYSTEM_PYTHON, "-c", code], check=True, capture_output=True, text=True)
    keys = frozenset(json.loads(out.stdout))
    assert "runcmd" in keys and "write_files" in keys, "cloud-init schema lookup broke"
    return keys


def check_cloud_config(text: str) -> list[str]:
    """Problems with a #cloud-config document; [] when cloud-init accepts it."""
    if shutil.which("cloud-init") is None:
        raise RuntimeError("cloud-init is not installed (apt-get install cloud-init)")
    problems = []
    if not text.startswith("#cloud-config\n"):
        problems.append("first line is not #cloud-config")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(text)
        f.flush()
        res = subprocess.run(
            ["cloud-init", "schema", "--config-file", f.name], capture_output=True, text=True
        )
    if res.returncode != 0:
        problems.append(f"cloud-init schema: {res.stdout}{res.stderr}".strip())
    doc = yaml.safe_load(text)
    unknown = sorted(set(doc or {}) - module_keys())
    if unknown:
        problems.append(f"top-level keys no cloud-init module reads: {unknown}")
    return problems


def shellcheck(path: Path) -> str:
    res = subprocess.run(["shellcheck", "-x", str(path)], capture_output=True, text=True)
    return "" if res.returncode == 0 else res.stdout + res.stderr


def written_content(entry: dict) -> str:
    """What cloud-init's own write_files module writes for one entry (decodes
    `encoding: gz+b64` and the like with cloud-init's code, not ours)."""
    code = (
        "import json, sys\n"
        "from cloudinit.config import cc_write_files as w\n"
        "e = json.load(sys.stdin)\n"
        "kinds = w.canonicalize_extraction(e.get('encoding'))\n"
        "c = w.extract_contents(e['content'], kinds)\n"
        "sys.stdout.buffer.write(c if isinstance(c, bytes) else c.encode())\n"
    )
    out = subprocess.run(
        [SYSTEM_PYTHON, "-c", code], input=json.dumps(entry).encode(), capture_output=True
    )
    if out.returncode != 0:
        raise AssertionError(f"cloud-init cannot decode {entry.get('path')}: {out.stderr!r}")
    return out.stdout.decode()
