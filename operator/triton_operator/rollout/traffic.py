"""Held A/B experiments: fixed weights between variants, never promoted, each with its figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from triton_operator.rollout.analysis import VariantWindow, format_ms
from triton_operator.rollout.state import RolloutReason


@dataclass(frozen=True)
class Variant:
    """One named arm of an experiment: a model version and its fixed percent of traffic."""

    name: str
    version: str
    weight: int


@dataclass(frozen=True)
class Traffic:
    """Weights by role or variant name, and why, for a strategy that never moves on by itself."""

    weights: Mapping[str, int] = field(default_factory=dict)
    reason: str = ""
    message: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", dict(self.weights))


def validate_variants(variants: Sequence[Variant], path: str = "spec.experiment.variants") -> list[str]:
    """What is wrong with an experiment's variants, one message per problem naming its field path."""
    problems = []
    if len(variants) < 2:
        problems.append(f"{path}: an experiment needs at least 2 variants, got {len(variants)}")
    names: dict[str, int] = {}
    versions: dict[str, int] = {}
    for index, variant in enumerate(variants):
        where = f"{path}[{index}]"
        if not variant.name:
            problems.append(f"{where}.name: a variant needs a name")
        elif variant.name in names:
            problems.append(f"{where}.name: {variant.name!r} is already {path}[{names[variant.name]}]'s")
        else:
            names[variant.name] = index
        if variant.version in versions:
            problems.append(
                f"{where}.version: {variant.version!r} is already {path}[{versions[variant.version]}]'s; "
                "variants must differ to be told apart"
            )
        else:
            versions[variant.version] = index
        if (
            isinstance(variant.weight, bool)
            or not isinstance(variant.weight, int)
            or not 0 <= variant.weight <= 100
        ):
            problems.append(f"{where}.weight: {variant.weight} is not within 0..100")
    total = sum(variant.weight for variant in variants)
    if variants and total != 100:
        problems.append(f"{path}: weights sum to {total}, not 100")
    return problems


def _figures(variant: Variant, window: VariantWindow | None, describe: str) -> str:
    """'b (version 2, 10%): 1,000 requests, 5 failed (0.005), p99 2.6 ms'."""
    parts = []
    if window is None:
        parts.append("no metrics yet")
    else:
        ratio = window.failures / window.requests if window.requests else 0.0
        parts.append(f"{window.requests:,} requests, {window.failures:,} failed ({ratio:.3f})")
        if window.p99_ms is not None:
            parts.append(f"p99 {format_ms(window.p99_ms)} ms")
        if window.queue_ms is not None:
            parts.append(f"queue time {format_ms(window.queue_ms)} ms")
    return f"{variant.name} ({describe} {variant.version}, {variant.weight}%): {', '.join(parts)}"


def hold_experiment(
    variants: Sequence[Variant],
    windows: Mapping[str, VariantWindow] | None = None,
    describe: str = "version",
) -> Traffic:
    """An A/B experiment's weights, held as written (it never promotes), with every variant's figures.

    `windows` is keyed by variant (`Variant.version`): a model version inside a server, a server
    behind a Gateway; `describe` says which.
    """
    problems = validate_variants(variants, path="variants")
    if problems:
        raise ValueError("; ".join(problems))
    windows = windows or {}
    split = " / ".join(f"{variant.name} {variant.weight}%" for variant in variants)
    figures = "; ".join(_figures(variant, windows.get(variant.version), describe) for variant in variants)
    return Traffic(
        {variant.name: variant.weight for variant in variants},
        RolloutReason.EXPERIMENT_RUNNING,
        f"experiment holds {split} (never promotes): {figures}",
    )
