"""How much longer a build takes than natively on one Azure x86-64 vCPU.

Emulated factors come from measurements made in this repository (update
them when the measurements change):

- /work/shared/LAB-NOTES.md, "Emulation cost": a whole trivial package
  built through OBS took 31 s natively and 131 s under qemu-aarch64: 4.2x.
  The same notes measured zlib (bookworm, tests included) through the farm
  at 73 s x86_64, 494 s aarch64 (6.8x), 457 s armv7l (6.3x); that package's
  compile-heavy phases reach 10x, while debootstrap's second stage (package
  installation, much of every build root) is 3.6x.
- the integration tier (tests/integration/test_farm_builds.py) prints the
  hello-obs ratio of each run ("hello-obs build aarch64 ... (N.Nx native)");
  it runs three builds at once on 2 cores, so it is noisier.

The model uses 4.2x for both ARM architectures: the measured whole-build
ratio, inside the 4-5x the source design reports for the real archive. The
zlib ratios (6.3-6.8x) show a compile-heavy package can be much worse.

Accelerated groups (emulated+accel) use the emulated factors too. The
accelerator's compiler speed-up is measured (tests/integration/test_accel.py:
a C and a C++ file 8-10x faster than the emulated compiler), but its
whole-job ratio on real Debian packages, where build-root setup and test
suites stay emulated, is not measured yet, so the estimate claims no gain.

Graviton factors are NOT measured here (no AWS account): they are this
model's assumptions per generation, one Graviton vCPU (a physical core)
against one Azure x86-64 vCPU (a hyperthread).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Slowdown:
    factor: float
    source: str


NATIVE = Slowdown(1.0, "native x86-64 on Azure: the unit of the workload's minutes")

EMULATED: dict[str, Slowdown] = {
    "aarch64": Slowdown(4.2, "LAB-NOTES: trivial package through OBS, 31 s -> 131 s"),
    "armv7hl": Slowdown(4.2, "as aarch64 (LAB-NOTES zlib: armv7l 6.3x vs aarch64 6.8x)"),
}

# Graviton generation -> slowdown of a native build against an Azure x86-64 vCPU.
GRAVITON_GENERATION: dict[int, Slowdown] = {
    1: Slowdown(1.8, "assumed: Cortex-A72 (a1), well behind current x86-64"),
    2: Slowdown(1.15, "assumed: Neoverse N1 core vs x86-64 hyperthread"),
    3: Slowdown(0.95, "assumed: Neoverse V1 core vs x86-64 hyperthread"),
    4: Slowdown(0.85, "assumed: Neoverse V2 core vs x86-64 hyperthread"),
}

# Share of a build that `make -j` parallelises (Amdahl): a job with j
# parallel jobs takes (1 - P) + P / j of its single-job time. Assumed: Debian
# builds spend much of their time in configure, tests and packaging, which
# run serially.
PARALLEL_SHARE = 0.5


def parallel_speed(jobs: int) -> float:
    """Time of a build at `make -j jobs`, relative to a single job."""
    return (1 - PARALLEL_SHARE) + PARALLEL_SHARE / jobs
