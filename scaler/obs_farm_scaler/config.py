"""`/etc/obs-farm/scaler.json` (see scaler/CONTRACT.md), read into frozen dataclasses.

Every problem is reported as a ConfigError naming the setting, the value and
what is allowed; nothing is defaulted from the environment except the
file's path (OBS_FARM_SCALER_CONFIG).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PATH = "/etc/obs-farm/scaler.json"
EXECUTIONS = ("native", "emulated", "emulated+accel")
CLOUDS = ("azure", "aws")
# A machine that has not registered a single worker this long after it
# appeared is reaped (cloud-init failed, the image is broken, ...).
DEFAULT_BOOT_MINUTES = 30.0


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Group:
    arch: str  # repository architecture: the `<arch>` in worker ids `<host>:<arch>-<n>`
    hostarch: str  # scheduler architecture the workers announce
    instances: int
    execution: str

    @property
    def native(self) -> bool:
        return self.execution == "native"

    def worker_ids(self, host: str) -> list[str]:
        return [f"{host}:{self.arch}-{n}" for n in range(1, self.instances + 1)]


@dataclass(frozen=True)
class AzureTarget:
    subscription_id: str
    resource_group: str
    scale_set: str


@dataclass(frozen=True)
class AwsTarget:
    region: str
    auto_scaling_group: str
    lifecycle_hook: str | None
    role_arn: str
    web_identity_audience: str


@dataclass(frozen=True)
class Pool:
    name: str
    cloud: str
    min: int
    max: int
    groups: tuple[Group, ...]
    azure: AzureTarget | None = None
    aws: AwsTarget | None = None

    def instances_for(self, hostarch: str) -> int:
        """Worker instances per machine announcing `hostarch` (0: none)."""
        return sum(g.instances for g in self.groups if g.hostarch == hostarch)

    def native_for(self, hostarch: str) -> bool:
        return any(g.native for g in self.groups if g.hostarch == hostarch)

    def worker_ids(self, host: str) -> list[str]:
        return [wid for g in self.groups for wid in g.worker_ids(host)]


@dataclass(frozen=True)
class Settings:
    repserver: str
    bsdir: str
    poll_seconds: float
    idle_minutes: float
    unhealthy_minutes: float
    boot_minutes: float
    pools: tuple[Pool, ...]


def _get(d: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise ConfigError(f"{where}.{key} is required")
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}.{key} must be {names}; got {value!r}")
    return value


def _number(d: dict[str, Any], key: str, where: str, default: float, lo: float, hi: float) -> float:
    if key not in d:
        return default
    value = _get(d, key, where, (int, float))
    if not lo <= value <= hi:
        raise ConfigError(f"{where}.{key} must be between {lo:g} and {hi:g}; got {value!r}")
    return float(value)


def _text(d: dict[str, Any], key: str, where: str) -> str:
    value = _get(d, key, where, str)
    if not value:
        raise ConfigError(f"{where}.{key} must not be empty")
    return str(value)


def _group(raw: Any, where: str) -> Group:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be an object; got {raw!r}")
    instances = _get(raw, "instances", where, int)
    if instances < 1:
        raise ConfigError(f"{where}.instances must be at least 1; got {instances}")
    execution = _text(raw, "execution", where)
    if execution not in EXECUTIONS:
        raise ConfigError(
            f"{where}.execution must be one of {', '.join(EXECUTIONS)}; got {execution!r}"
        )
    return Group(_text(raw, "arch", where), _text(raw, "hostarch", where), instances, execution)


def _pool(raw: Any, where: str) -> Pool:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be an object; got {raw!r}")
    name = _text(raw, "name", where)
    where = f"pools[{name}]"
    cloud = _text(raw, "cloud", where)
    if cloud not in CLOUDS:
        raise ConfigError(f"{where}.cloud must be one of {', '.join(CLOUDS)}; got {cloud!r}")
    lo, hi = _get(raw, "min", where, int), _get(raw, "max", where, int)
    if lo < 0 or hi < lo:
        raise ConfigError(f"{where}: min and max must satisfy 0 <= min <= max; got {lo}, {hi}")
    groups_raw = _get(raw, "groups", where, list)
    if not groups_raw:
        raise ConfigError(f"{where}.groups must not be empty")
    groups = tuple(_group(g, f"{where}.groups[{i}]") for i, g in enumerate(groups_raw))
    target = _get(raw, cloud, where, dict)
    tw = f"{where}.{cloud}"
    if cloud == "azure":
        return Pool(
            name, cloud, lo, hi, groups,
            azure=AzureTarget(
                _text(target, "subscriptionId", tw),
                _text(target, "resourceGroup", tw),
                _text(target, "scaleSet", tw),
            ),
        )  # fmt: skip
    hook = target.get("lifecycleHook")
    if hook is not None and not isinstance(hook, str):
        raise ConfigError(f"{tw}.lifecycleHook must be str; got {hook!r}")
    return Pool(
        name, cloud, lo, hi, groups,
        aws=AwsTarget(
            _text(target, "region", tw),
            _text(target, "autoScalingGroup", tw),
            hook or None,
            _text(target, "roleArn", tw),
            _text(target, "webIdentityAudience", tw),
        ),
    )  # fmt: skip


def parse(raw: Any) -> Settings:
    if not isinstance(raw, dict):
        raise ConfigError(f"the scaler configuration must be a JSON object; got {raw!r}")
    pools_raw = _get(raw, "pools", "scaler", list)
    pools = tuple(_pool(p, f"pools[{i}]") for i, p in enumerate(pools_raw))
    names = [p.name for p in pools]
    if len(set(names)) != len(names):
        raise ConfigError(f"scaler.pools: pool names must be unique; got {names}")
    return Settings(
        repserver=_text(raw, "repserver", "scaler").rstrip("/"),
        bsdir=_text(raw, "bsdir", "scaler"),
        # The issue bounds the poll: at most 10 s, so reaction stays under 10 s.
        poll_seconds=_number(raw, "pollSeconds", "scaler", 5, 0.5, 10),
        idle_minutes=_number(raw, "idleMinutes", "scaler", 10, 0, 24 * 60),
        unhealthy_minutes=_number(raw, "unhealthyMinutes", "scaler", 5, 0, 24 * 60),
        boot_minutes=_number(raw, "bootMinutes", "scaler", DEFAULT_BOOT_MINUTES, 1, 24 * 60),
        pools=pools,
    )


def load(path: str | None = None) -> Settings:
    path = path or os.environ.get("OBS_FARM_SCALER_CONFIG") or DEFAULT_PATH
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read the scaler configuration {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from e
    return parse(raw)
