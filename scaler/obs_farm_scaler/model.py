"""What the scaler observes and what it decides to do, as plain data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# /workerstatus states of a registered worker that is not working for us.
DOWN_STATES = ("down", "dead", "away")


@dataclass(frozen=True)
class Worker:
    workerid: str
    state: str  # idle, building, down, dead, away
    hostarch: str
    uri: str = ""

    @property
    def host(self) -> str:
        """The machine, from the id `<host>:<arch>-<n>` (CONTRACT.md)."""
        return self.workerid.split(":", 1)[0] if ":" in self.workerid else ""


@dataclass(frozen=True)
class WorkerStatus:
    workers: tuple[Worker, ...]
    # Scheduler architecture -> jobs with no worker yet. <blocked> is left
    # out on purpose: those jobs wait on dependencies, not on capacity.
    waiting: Mapping[str, int]


@dataclass(frozen=True)
class Machine:
    id: str  # what the cloud deletes by: the Azure VM name, the EC2 instance id
    host: str  # the hostname in its worker ids
    created: float | None = None  # epoch seconds, when the cloud says
    # AWS: the instance is in Terminating:Wait (the group's termination
    # lifecycle hook holds it for us to drain).
    terminating: bool = False


@dataclass(frozen=True)
class PoolState:
    capacity: int  # the cloud's own target count (sku.capacity, DesiredCapacity)
    machines: tuple[Machine, ...]


@dataclass(frozen=True)
class Memory:
    """What the scaler remembers between polls (all times epoch seconds)."""

    idle_since: Mapping[str, float] = field(default_factory=dict)  # workerid
    first_seen: Mapping[str, float] = field(default_factory=dict)  # host
    trouble_since: Mapping[str, float] = field(default_factory=dict)  # host, a group down
    drained: Mapping[str, float] = field(default_factory=dict)  # host, when drained


@dataclass(frozen=True)
class Observed:
    status: WorkerStatus | None  # None: the repserver did not answer
    pools: Mapping[str, PoolState | None]  # None: the pool's cloud API failed
    memory: Memory = field(default_factory=Memory)


@dataclass(frozen=True)
class SetCapacity:
    pool: str
    capacity: int


@dataclass(frozen=True)
class Drain:
    pool: str
    host: str
    reason: str


@dataclass(frozen=True)
class Delete:
    pool: str
    machine: str
    host: str
    reason: str


@dataclass(frozen=True)
class CompleteLifecycle:
    pool: str
    machine: str
    host: str


Action = SetCapacity | Drain | Delete | CompleteLifecycle


@dataclass(frozen=True)
class PoolDecision:
    pool: str
    demand: Mapping[str, int]  # scheduler arch -> jobs this pool should serve
    current: int | None  # machines counted as serving (None: unknown)
    desired: int | None
    why: str

    def line(self) -> str:
        demand = ",".join(f"{a}={n}" for a, n in sorted(self.demand.items())) or "-"
        cur = "?" if self.current is None else self.current
        want = "?" if self.desired is None else self.desired
        return f"pool={self.pool} demand={demand} current={cur} desired={want} why={self.why}"


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    pools: tuple[PoolDecision, ...]
    memory: Memory
