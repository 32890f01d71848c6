"""Observed traffic shares: per-version nv_inference_count deltas between two snapshots of every pod."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# (pod, model, version) -> a cumulative counter's value, as one scrape of each pod's /metrics reads it.
SampleKey = tuple[str, str, str]


def _version_order(version: str) -> tuple[int, str]:
    """Triton's numeric versions in numeric order (2 before 10), any other after, by name."""
    return (int(version), "") if version.isdigit() else (1 << 62, version)


@dataclass(frozen=True)
class TrafficShares:
    """Inferences each version served in a window (counted from nv_inference_count, not requests)."""

    counts: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts", dict(self.counts))  # a copy: the caller's dict may change

    @property
    def total(self) -> int:
        """All inferences in the window."""
        return sum(self.counts.values())

    @property
    def percent(self) -> dict[str, float]:
        """Each version's share of the total in percent; empty when nothing was served."""
        total = self.total
        if total == 0:
            return {}
        return {version: 100.0 * count / total for version, count in self.counts.items()}

    def describe(self) -> str:
        """'version 1 90.2%, version 2 9.8% of 10,000 inferences'."""
        if self.total == 0:
            return "no inferences in the window"
        percent = self.percent
        parts = ", ".join(
            f"version {version} {percent[version]:.1f}%"
            for version in sorted(self.counts, key=_version_order)
        )
        return f"{parts} of {self.total:,} inferences"


def counter_delta(before: float | None, after: float) -> float:
    """How much a cumulative counter grew; a smaller value (or a new series) means it restarted at 0."""
    if before is None or after < before:
        return after
    return after - before


def observed_shares(
    before: Mapping[SampleKey, float], after: Mapping[SampleKey, float], model: str
) -> TrafficShares:
    """Per-version inference counts of `model` between two snapshots, summed over pods.

    Every version in `after` appears, with 0 when it served nothing (a share that did not arrive shows).
    A pod only in `before` (gone) adds nothing: what it served since `before` was never read.
    """
    counts: dict[str, float] = {}
    for (pod, name, version), value in after.items():
        if name != model:
            continue
        counts[version] = counts.get(version, 0.0) + counter_delta(before.get((pod, name, version)), value)
    return TrafficShares({version: round(count) for version, count in counts.items()})


def accumulate(windows: Iterable[TrafficShares]) -> TrafficShares:
    """The shares of consecutive windows taken together (counts add up)."""
    counts: dict[str, int] = {}
    for window in windows:
        for version, count in window.counts.items():
            counts[version] = counts.get(version, 0) + count
    return TrafficShares(counts)
