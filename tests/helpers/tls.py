"""Real certificates and keys made with openssl, for the appliance's TLS paths."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


def make_pair(name: str = "obs.example.org") -> tuple[str, str]:
    """(PEM certificate, PEM PKCS#8 key) of a fresh self-signed certificate."""
    with tempfile.TemporaryDirectory() as d:
        crt, key = Path(d) / "c.pem", Path(d) / "k.pem"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                "-keyout", str(key), "-out", str(crt),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return crt.read_text(), key.read_text()
