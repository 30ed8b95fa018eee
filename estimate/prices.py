"""The price table (estimate/prices.yaml) and the `obs-farm:prices` override.

Keys name one priced thing: `azure/<region>/vm/<size>` and
`aws/<region>/ec2/<type>` (hourly `onDemand` and `spot`),
`azure/<region>/premiumSsd/<tier>` (per month), `azure/<region>/natGateway`,
`azure/<region>/publicIp`, `azure/<region>/vpnGateway/<sku>`,
`aws/<region>/natGateway`, `aws/<region>/vpnConnection` (per hour) and
`aws/<region>/ebsGp3` (per GB-month). A value of null means no published
price could be found when the table was made: the estimate then says which
prices it lacks instead of guessing. Each found entry carries its source
and the date it was taken.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PRICES_FILE = Path(__file__).with_name("prices.yaml")
HOURS_PER_MONTH = 730
STALE_AFTER_DAYS = 183  # six months

# Premium SSD tiers by provisioned size (GiB): a disk is billed as the
# smallest tier that holds it.
PREMIUM_SSD_TIERS = (
    ("P4", 32),
    ("P6", 64),
    ("P10", 128),
    ("P15", 256),
    ("P20", 512),
    ("P30", 1024),
    ("P40", 2048),
    ("P50", 4096),
    ("P60", 8192),
    ("P70", 16384),
    ("P80", 32767),
)

_KEY = re.compile(
    r"^(azure/[a-z0-9]+/(vm/Standard_[A-Za-z0-9_]+|premiumSsd/P[0-9]+|natGateway|publicIp"
    r"|vpnGateway/VpnGw[1-3]AZ)"
    r"|aws/[a-z]{2}(-[a-z]+)+-[0-9]/(ec2/[a-z0-9]+\.[a-z0-9]+|natGateway|vpnConnection|ebsGp3))$"
)
_HOURLY_PAIR = ("/vm/", "/ec2/")


def premium_ssd_tier(size_gib: int) -> str:
    for tier, gib in PREMIUM_SSD_TIERS:
        if size_gib <= gib:
            return tier
    return PREMIUM_SSD_TIERS[-1][0]


@dataclass(frozen=True)
class Price:
    key: str
    # For vm/ec2 entries: on-demand and Spot per hour; for the others `value`.
    value: float | None = None
    on_demand: float | None = None
    spot: float | None = None
    source: str = ""
    as_of: datetime.date | None = None

    def rate(self, spot: bool = False) -> float | None:
        if self.value is not None:
            return self.value
        return self.spot if spot else self.on_demand


@dataclass(frozen=True)
class PriceTable:
    currency: str
    compiled: datetime.date
    entries: dict[str, Price]

    def get(self, key: str) -> Price | None:
        return self.entries.get(key)

    def with_override(self, override: dict[str, Any]) -> PriceTable:
        entries = dict(self.entries)
        for key, value in override.items():
            old = entries.get(key, Price(key))
            if isinstance(value, dict):
                entries[key] = Price(
                    key,
                    on_demand=value.get("onDemand", old.on_demand),
                    spot=value.get("spot", old.spot),
                    source="obs-farm:prices (stack config)",
                )
            else:
                entries[key] = Price(
                    key, value=float(value), source="obs-farm:prices (stack config)"
                )
        return PriceTable(self.currency, self.compiled, entries)


def _date(value: Any) -> datetime.date | None:
    if value is None or isinstance(value, datetime.date):
        return value
    return datetime.date.fromisoformat(str(value))


def load_prices(path: Path = PRICES_FILE) -> PriceTable:
    doc = yaml.safe_load(path.read_text())
    entries = {}
    for key, e in (doc.get("entries") or {}).items():
        e = e or {}
        entries[key] = Price(
            key,
            value=e.get("value"),
            on_demand=e.get("onDemand"),
            spot=e.get("spot"),
            source=str(e.get("source", "")),
            as_of=_date(e.get("asOf")),
        )
    return PriceTable(str(doc["currency"]), _date(doc["compiled"]) or datetime.date.min, entries)


def check_override(value: Any) -> dict[str, Any]:
    """Validate an `obs-farm:prices` mapping; ValueError names the entry."""
    if not isinstance(value, dict):
        raise ValueError(
            "must be a mapping of price keys (e.g. azure/westeurope/vm/Standard_F32s_v2) "
            f"to prices; got {value!r}"
        )
    for key, price in value.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(
                f"has an unknown price key {key!r}; keys look like "
                "azure/<region>/vm/<size>, azure/<region>/premiumSsd/P30, "
                "azure/<region>/natGateway, azure/<region>/publicIp, "
                "azure/<region>/vpnGateway/VpnGw1AZ, aws/<region>/ec2/<type>, "
                "aws/<region>/natGateway, aws/<region>/vpnConnection, aws/<region>/ebsGp3"
            )
        if any(part in key for part in _HOURLY_PAIR):
            if not isinstance(price, dict) or not price or set(price) - {"onDemand", "spot"}:
                raise ValueError(
                    f"[{key!r}] must be a mapping with onDemand and/or spot hourly prices; "
                    f"got {price!r}"
                )
            for kind, amount in price.items():
                _check_amount(f"{key}.{kind}", amount)
        else:
            _check_amount(key, price)
    return value


def _check_amount(where: str, amount: Any) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
        raise ValueError(f"[{where!r}] must be a price of 0 or more; got {amount!r}")
