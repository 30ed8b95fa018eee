"""The `_jobhistory` importer on what a real OBS backend answers.

hello-obs is built twice for x86_64 (native, one worker on this host) through
the backend the server's cloud-init configures; the repserver's own
`GET /build/lab/Debian_12/x86_64/_jobhistory` then goes through
tools/jobhistory.py, and the workload it writes must load and carry the
duration of the last succeeded job. x86_64 only keeps the test to about two
minutes. Set OBS_FARM_RECORD_JOBHISTORY=FILE to keep the answer (the unit
tier's fixture tests/data/jobhistory/lab-Debian_12-x86_64.xml was recorded
so).
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from config import load_settings
from estimate.workload import load_workload
from tests.integration.farm import farm_backend, record, require_host, scratch_dir
from tools import jobhistory
from tools.offline import read_stack_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HELLO_OBS = REPO / "tests" / "data" / "hello-obs"
BUILD_TIMEOUT_S = 600
WORKER_PORT = 41901


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with scratch_dir("obs-farm-jobhistory-") as path:
        yield path


def test_jobhistory_of_a_real_backend_imports(workdir: Path) -> None:
    require_host()
    t0 = time.monotonic()
    settings = load_settings(read_stack_config("dev"))
    with farm_backend(settings, workdir) as obs:
        obs.setup_debian_project(["x86_64"])
        obs.create_project("lab", "Debian_12", [("Debian:12", "main")], ["x86_64"])
        boot = obs.fetch_worker_code()
        obs.start_host_worker(boot, 1, "x86_64", WORKER_PORT)
        since = time.time()
        obs.create_package("lab", "hello-obs", HELLO_OBS)
        first = obs.wait_build("lab", "Debian_12", "x86_64", "hello-obs", BUILD_TIMEOUT_S, since)
        assert first.status == "succeeded", first
        since = obs.rebuild("lab", "hello-obs", "x86_64")
        second = obs.wait_build("lab", "Debian_12", "x86_64", "hello-obs", BUILD_TIMEOUT_S, since)
        assert second.status == "succeeded", second
        xml = obs.rep("GET", "/build/lab/Debian_12/x86_64/_jobhistory", {"limit": "1000"})
    record("jobhistory import: backend, 2 x86_64 builds", f"{time.monotonic() - t0:.0f} s")
    if os.environ.get("OBS_FARM_RECORD_JOBHISTORY"):
        Path(os.environ["OBS_FARM_RECORD_JOBHISTORY"]).write_bytes(xml)

    raw = [dict(e.attrib) for e in ET.fromstring(xml).findall("jobhist")]
    ours = [j for j in raw if j.get("package") == "hello-obs" and j.get("code") == "succeeded"]
    assert len(ours) == 2, raw
    last = ours[-1]

    history = workdir / "history.xml"
    history.write_bytes(xml)
    out = workdir / "lab.yaml"
    code = jobhistory.main(["--name", "lab", "--out", str(out), f"Debian_12/x86_64={history}"])
    assert code == 0
    workload = load_workload(str(out))
    assert [(j.repository, j.arch, j.package) for j in workload.jobs] == [
        ("Debian_12", "x86_64", "hello-obs")
    ]
    want = (int(last["endtime"]) - int(last["starttime"])) / 60
    assert workload.jobs[0].minutes == pytest.approx(want, abs=0.001)
    assert 0 < workload.jobs[0].minutes < BUILD_TIMEOUT_S / 60
    assert yaml.safe_load(out.read_text())["repositories"] == [
        {"name": "Debian_12", "architectures": ["x86_64"], "packages": 1}
    ]
    # The backend's own duration for that job agrees with what we imported.
    assert second.job_seconds == pytest.approx(want * 60, abs=1)
