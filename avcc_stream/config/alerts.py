"""Alert thresholds: levels on a count, smoothing, hysteresis, minimum duration, cooldown,
and a surge alert on the rate of change. Global `alerts:` are the defaults of every camera;
a camera's `alerts:` overrides them key by key (`levels` is replaced as a whole)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from avcc_stream.config.common import RuleError, StrictModel

LEVEL_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
RESERVED_LEVELS = ("clear", "surge")


def _check_level_name(name: str) -> str:
    if not LEVEL_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"invalid level name {name!r}: expected lower-case letters, digits and '_', "
            "starting with a letter (e.g. warn, critical)"
        )
    if name in RESERVED_LEVELS:
        raise ValueError(f"{name!r} is reserved for alert events; pick another level name")
    return name


LevelName = Annotated[str, AfterValidator(_check_level_name)]
Threshold = Annotated[float, Field(gt=0)]
Levels = dict[LevelName, Threshold]


def check_levels_above_hysteresis(
    levels: dict[str, float], hysteresis: float, *loc_prefix: str | int
) -> None:
    """Each threshold must exceed the hysteresis, or the alert could never clear at >= 0."""
    for name, threshold in levels.items():
        if threshold <= hysteresis:
            raise RuleError(
                f"threshold {threshold:g} must be greater than the hysteresis ({hysteresis:g}), "
                "or the alert could never clear",
                *loc_prefix, "levels", name,
            )
    thresholds = sorted(levels.values())
    if len(set(thresholds)) != len(thresholds):
        raise RuleError("two levels share one threshold; give each level its own", *loc_prefix, "levels")


class SurgeSettings(StrictModel):
    rate_per_s: float | None = Field(
        default=None, gt=0,
        title="Raise a surge alert when the count grows faster than this (people/second); null: off",
    )
    window_s: float = Field(default=10.0, gt=0, le=3600, title="Window the rate is measured over")


class AlertSettings(StrictModel):
    enabled: bool = Field(default=True, title="Evaluate alerts for this camera")
    levels: Levels = Field(
        default_factory=dict, title="Level name -> people threshold on the smoothed count"
    )
    smoothing_windows: int = Field(
        default=1, ge=1, le=3600, title="Moving mean over this many one-second windows"
    )
    hysteresis: float = Field(
        default=0.0, ge=0, title="A level clears once the count falls below threshold - hysteresis"
    )
    min_duration_s: float = Field(
        default=0.0, ge=0, title="A level is raised only after it has held this long"
    )
    cooldown_s: float = Field(
        default=0.0, ge=0, title="A level is not raised again within this long of its previous raise"
    )
    surge: SurgeSettings = Field(default_factory=SurgeSettings, title="Rate-of-change alert")

    @model_validator(mode="after")
    def _check_rules(self) -> AlertSettings:
        check_levels_above_hysteresis(self.levels, self.hysteresis)
        return self
