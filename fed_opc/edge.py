"""Edge federations: who is online in a round, how fast each device is, and the simulated clock.

Training stays real; only time is simulated. Every decision is a pure function of the scenario's seed, the round and
the client, so sampling, stragglers and latencies are the same on every engine and after a resume.

- ``federation.availability`` decides who is online in a round (:class:`Availability`): ``always``; ``bernoulli``
  (each client online with probability ``p``, independently per round); ``diurnal`` (each client online in one window
  of ``round(online_fraction * period)`` consecutive rounds per ``period``, at a seeded phase: clients spread over time
  zones); ``trace`` (a CSV of ``client,round_from,round_to`` online intervals, both ends included).
- ``federation.devices`` assigns each client a profile (:class:`Devices`) with a compute speed (samples/s) and up/down
  bandwidth (MB/s, 10^6 bytes per second); a client's simulated time in a phase is its samples / speed + bytes down /
  down bandwidth + bytes up / up bandwidth. With ``round_deadline_s``, a client slower than the deadline is a
  straggler: its update is dropped and counted.
- The clock (:class:`EdgeClock`) advances by each phase's duration: the slowest accepted client, or the deadline when
  a straggler was dropped (the server waited until the deadline before closing the phase). A round with two phases
  (the retain update, then the requesters, who need it) lasts both.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from fed_opc.rng import numpy_rng
from fed_opc.schema import ConfigError, bounds

MB = 1e6


@dataclass(frozen=True)
class AvailabilityConfig:
    """``federation.availability``: who is online in each round."""

    kind: Literal["always", "bernoulli", "diurnal", "trace"] = "always"
    p: float | None = field(default=None, metadata=bounds(gt=0, le=1))
    period: int | None = field(default=None, metadata=bounds(ge=1))
    online_fraction: float | None = field(default=None, metadata=bounds(gt=0, le=1))
    file: str | None = None

    def __post_init__(self) -> None:
        needs = {"always": set(), "bernoulli": {"p"}, "diurnal": {"period", "online_fraction"}, "trace": {"file"}}
        for key in ("p", "period", "online_fraction", "file"):
            given = getattr(self, key) is not None
            if key in needs[self.kind] and not given:
                raise ConfigError(key, f"required by availability kind {self.kind}")
            if key not in needs[self.kind] and given:
                raise ConfigError(key, f"not used by availability kind {self.kind}")


@dataclass(frozen=True)
class DeviceProfile:
    """One kind of device: its share of the clients, compute speed and bandwidth."""

    name: str = field(metadata={"pattern": r"[A-Za-z0-9][A-Za-z0-9_.-]*", "max_length": 64})
    share: float = field(metadata=bounds(gt=0, le=1))
    samples_per_s: float = field(metadata=bounds(gt=0))
    up_mbps: float = field(metadata=bounds(gt=0))
    down_mbps: float = field(metadata=bounds(gt=0))


@dataclass(frozen=True)
class DevicesConfig:
    """``federation.devices``: device profiles (empty: no simulated clock) and the round deadline."""

    profiles: tuple[DeviceProfile, ...] = ()
    round_deadline_s: float | None = field(default=None, metadata=bounds(gt=0))

    def __post_init__(self) -> None:
        names = [p.name for p in self.profiles]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise ConfigError(f"profiles[{i}].name", f"{n} is used twice (also profiles[{names.index(n)}])")
        if self.profiles and not math.isclose(sum(p.share for p in self.profiles), 1.0, abs_tol=1e-6):
            total = sum(p.share for p in self.profiles)
            raise ConfigError("profiles", f"the shares must add up to 1, got {total:g}")
        if self.round_deadline_s is not None and not self.profiles:
            raise ConfigError("round_deadline_s", "needs device profiles (the clock comes from them)")


# ----------------------------------------------------------------------------------------------------------------------
# availability


def read_trace(path: Path, num_clients: int, where: str = "federation.availability.file") -> dict[int, list]:
    """Online intervals per client from a ``client,round_from,round_to`` CSV (header line required)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(where, f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip() for c in rows[0]] != ["client", "round_from", "round_to"]:
        raise ConfigError(where, f"{path}: expected the header client,round_from,round_to")
    out: dict[int, list[tuple[int, int]]] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        try:
            c, a, b = (int(x) for x in row)
        except ValueError:
            raise ConfigError(where, f"{path} line {n}: expected three integers, got {','.join(row)[:80]}") from None
        if not 0 <= c < num_clients:
            raise ConfigError(where, f"{path} line {n}: client {c} is not in 0..{num_clients - 1}")
        if not 0 <= a <= b:
            raise ConfigError(where, f"{path} line {n}: expected 0 <= round_from <= round_to, got {a}, {b}")
        out.setdefault(c, []).append((a, b))
    return out


class Availability:
    """Who is online in a round: a pure function of (seed, round, client) and the configuration."""

    def __init__(self, cfg: AvailabilityConfig, seed: int, num_clients: int, base_dir: Path | None = None) -> None:
        self.cfg, self.seed, self.num_clients = cfg, seed, num_clients
        self.trace: dict[int, list[tuple[int, int]]] = {}
        if cfg.kind == "trace":
            p = Path(cfg.file)
            if not p.is_absolute() and base_dir is not None:
                p = base_dir / p
            self.trace = read_trace(p, num_clients)
        if cfg.kind == "diurnal":
            self.window = max(1, round(cfg.online_fraction * cfg.period))
            self.phase = numpy_rng(seed, "availability/diurnal").integers(0, cfg.period, size=num_clients)

    @property
    def always(self) -> bool:
        """Whether every client is online in every round (``kind: always``)."""
        return self.cfg.kind == "always"

    def online(self, rnd: int, pids: Sequence[int]) -> list[int]:
        """The clients of ``pids`` online in round ``rnd``, sorted."""
        return sorted(p for p in pids if self.is_online(p, rnd))

    def is_online(self, pid: int, rnd: int) -> bool:
        """Whether client ``pid`` is online in round ``rnd``."""
        kind = self.cfg.kind
        if kind == "always":
            return True
        if kind == "bernoulli":
            return bool(numpy_rng(self.seed, "availability/bernoulli", rnd, pid).random() < self.cfg.p)
        if kind == "diurnal":
            return bool((rnd + int(self.phase[pid])) % self.cfg.period < self.window)
        return any(a <= rnd <= b for a, b in self.trace.get(pid, ()))

    def next_online(self, pids: Sequence[int], after: int, limit: int) -> int | None:
        """The first round ``> after`` (and ``<= after + limit``) in which one of ``pids`` is online, or None."""
        for rnd in range(after + 1, after + limit + 1):
            if any(self.is_online(p, rnd) for p in pids):
                return rnd
        return None


# ----------------------------------------------------------------------------------------------------------------------
# devices and the clock


class Devices:
    """Each client's device profile, assigned with the profiles' shares over a seeded permutation of the clients."""

    def __init__(self, cfg: DevicesConfig, seed: int, num_clients: int) -> None:
        self.cfg = cfg
        self.profile_of: dict[int, DeviceProfile] = {}
        if not cfg.profiles:
            return
        order = numpy_rng(seed, "devices").permutation(num_clients)
        # exact counts from the shares (largest remainders), so a share of 0.7 of 10 clients is 7 clients
        raw = [p.share * num_clients for p in cfg.profiles]
        counts = [int(math.floor(x)) for x in raw]
        for i in sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))[: num_clients - sum(counts)]:
            counts[i] += 1
        start = 0
        for prof, n in zip(cfg.profiles, counts):
            for pid in order[start : start + n]:
                self.profile_of[int(pid)] = prof
            start += n

    @property
    def enabled(self) -> bool:
        """Whether any device profile is configured; without one no simulated time is kept."""
        return bool(self.profile_of)

    def seconds(self, pid: int, samples: int, bytes_down: int, bytes_up: int) -> float:
        """Simulated seconds client ``pid`` needs to receive, train on ``samples`` samples and send its update."""
        p = self.profile_of[pid]
        return samples / p.samples_per_s + bytes_down / (p.down_mbps * MB) + bytes_up / (p.up_mbps * MB)


@dataclass
class PhaseResult:
    """What one phase (one message exchange) did on the simulated clock."""

    accepted: list[int]
    stragglers: list[int]
    seconds: float


@dataclass
class EdgeClock:
    """A world's simulated clock and what its devices spent, per profile."""

    devices: Devices
    now_s: float = 0.0
    stragglers: int = 0
    offline_met: int = 0  # rounds in which a request's requester was offline when its method needed it
    busy_s: dict[str, float] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    round_end_s: dict[int, float] = field(default_factory=dict)  # absolute round -> clock when it ended

    def phase(self, work: Sequence[tuple[int, int, int, int]]) -> PhaseResult:
        """Account one phase: ``work`` = [(pid, samples, bytes down, bytes up)] of the clients that answered.

        Returns who is accepted (not slower than the deadline), who straggled, and the phase's duration.
        """
        if not self.devices.enabled:
            return PhaseResult([p for p, *_ in work], [], 0.0)
        deadline = self.devices.cfg.round_deadline_s
        accepted, late, slowest = [], [], 0.0
        for pid, samples, down, up in work:
            t = self.devices.seconds(pid, samples, down, up)
            name = self.devices.profile_of[pid].name
            self.busy_s[name] = self.busy_s.get(name, 0.0) + t
            self.bytes[name] = self.bytes.get(name, 0) + int(down) + int(up)
            if deadline is not None and t > deadline:
                late.append(pid)
            else:
                accepted.append(pid)
                slowest = max(slowest, t)
        seconds = float(deadline) if late else slowest
        self.now_s += seconds
        self.stragglers += len(late)
        return PhaseResult(accepted, late, seconds)

    def end_round(self, rnd: int) -> None:
        """Record the clock's time at the end of absolute round ``rnd``."""
        self.round_end_s[int(rnd)] = self.now_s

    def as_dict(self) -> dict:
        """What results.json reports (simulated time only where device profiles give one)."""
        out: dict = {"offline_met": self.offline_met}
        if self.devices.enabled:
            out |= {
                "sim_seconds": self.now_s,
                "stragglers": self.stragglers,
                "devices": {
                    n: {"busy_s": self.busy_s.get(n, 0.0), "bytes": self.bytes.get(n, 0)}
                    for n in profile_counts(self.devices)
                },
            }
        return out

    def state(self) -> dict:
        """What a checkpoint keeps of the clock."""
        return {
            "now_s": self.now_s,
            "stragglers": self.stragglers,
            "offline_met": self.offline_met,
            "busy_s": dict(self.busy_s),
            "bytes": dict(self.bytes),
            "round_end_s": {str(k): v for k, v in self.round_end_s.items()},
        }

    def restore(self, saved: dict) -> None:
        """Set the clock back to what :meth:`state` saved (a resumed run)."""
        self.now_s = float(saved["now_s"])
        self.stragglers = int(saved["stragglers"])
        self.offline_met = int(saved["offline_met"])
        self.busy_s = {k: float(v) for k, v in saved["busy_s"].items()}
        self.bytes = {k: int(v) for k, v in saved["bytes"].items()}
        self.round_end_s = {int(k): float(v) for k, v in saved["round_end_s"].items()}


def sampling_pool(availability: Availability | None, rnd: int, eligible: Sequence[int]) -> list[int]:
    """The clients that may be sampled in ``rnd``: the eligible ones that are online."""
    if availability is None or availability.always:
        return sorted(eligible)
    return availability.online(rnd, eligible)


def profile_counts(devices: Devices) -> dict[str, int]:
    """How many clients each profile has."""
    out: dict[str, int] = {}
    for p in devices.profile_of.values():
        out[p.name] = out.get(p.name, 0) + 1
    return dict(sorted(out.items()))


def online_share(availability: Availability, rounds: Sequence[int], num_clients: int) -> float:
    """Mean share of clients online over ``rounds`` (for documentation and checks)."""
    return float(np.mean([len(availability.online(r, range(num_clients))) / num_clients for r in rounds]))


def edge_of(sc) -> tuple[Availability | None, Devices]:
    """The scenario's availability (None when every client is always online) and device profiles."""
    fed = sc.federation
    base = Path(sc.path).parent if sc.path else None
    n = sc.data.num_clients
    availability = None if fed.availability.kind == "always" else Availability(fed.availability, sc.seed, n, base)
    return availability, Devices(fed.devices, sc.seed, n)


def new_clock(sc, saved: dict | None = None) -> EdgeClock | None:
    """A world's clock (continuing ``saved``), or None for a federation without edge settings (nothing to simulate)."""
    availability, devices = edge_of(sc)
    if availability is None and not devices.enabled:
        return None
    clock = EdgeClock(devices)
    if saved:
        clock.restore(saved)
    return clock
