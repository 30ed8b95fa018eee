"""Shared fixtures: the repository on sys.path, valid settings to start from."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def make_public_key(kind: str = "ssh-ed25519", body: bytes = b"\x01" * 32) -> str:
    """An OpenSSH public key line built from its wire format (no ssh-keygen)."""

    def sshstr(b: bytes) -> bytes:
        return len(b).to_bytes(4, "big") + b

    blob = sshstr(kind.encode()) + sshstr(body)
    return f"{kind} {base64.b64encode(blob).decode()} test@example.org"


PUBLIC_KEY = make_public_key()


def raw_config(**overrides: Any) -> dict[str, str]:
    """Minimal valid raw config; keyword names are config keys (camelCase)."""
    raw: dict[str, Any] = {"sshPublicKey": PUBLIC_KEY, "adminCidrs": ["198.51.100.0/24"]}
    raw.update(overrides)
    return {
        (k if ":" in k else f"obs-farm:{k}"): (v if isinstance(v, str) else json.dumps(v))
        for k, v in raw.items()
        if v is not None
    }


@pytest.fixture
def public_key() -> str:
    return PUBLIC_KEY


@pytest.fixture(scope="session")
def tls_pair() -> tuple[str, str]:
    """A real certificate and its key (openssl), as a stack would supply them."""
    from tests.helpers.tls import make_pair

    return make_pair()


# In CI (`.ci/run` exports CI=true) every precondition a test could skip on
# is installed, so a skip means a check that silently did not run: fail it.
# The one exception is a measurement a person asks for by name, whose skip
# reason starts with OPT_IN (it is not a check CI is expected to run).
OPT_IN = "opt-in:"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        if str(reason).removeprefix("Skipped: ").startswith(OPT_IN):
            return
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where its preconditions are installed: {reason}"
