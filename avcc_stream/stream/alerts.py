"""Per-camera alerts: pure logic from CountResults to AlertEvents, emitted on state change only.

For the whole scene and for each zone a `LevelTracker` turns a smoothed count into a state
(no alert, or one of the configured levels). A level is raised once the smoothed count has
been at or above its threshold for `min_duration_s` (and not within `cooldown_s` of that
level's previous raise); it is held until the count falls below `threshold - hysteresis`.
A surge is the same tracker with one level, fed with the rate of change of the smoothed scene
count (people per second over `surge.window_s`).

A zone's count is the patch counts weighted by each patch's share of the zone: the area of
the patch's rectangle inside the polygon (frame pixels), or 1 for the listed patches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np

from avcc_stream.config.camera import CameraConfig
from avcc_stream.config.zones import ZoneSettings, polygon_area
from avcc_stream.stream.types import CountResult

CLEAR = "clear"
SURGE = "surge"
AlertKind = Literal["level", "surge"]


@dataclass(frozen=True)
class AlertEvent:
    """A change of one alert's state. `level` is the new state (a level name, "surge", or
    "clear"); `threshold` is the boundary that was crossed (for a clear: threshold - hysteresis);
    `since` is when the new state's condition started to hold."""

    camera: str
    zone: str | None  # None: the whole scene
    kind: AlertKind
    level: str
    previous: str  # the state before ("clear" or a level name)
    value: float  # the smoothed count (people), or the rate (people/s) for a surge
    threshold: float
    since: datetime
    window_end: datetime


@dataclass(frozen=True)
class Transition:
    level: str
    previous: str
    threshold: float
    since: datetime


class LevelTracker:
    """The state machine of one alert: ordered levels with hysteresis, minimum duration and
    cooldown. Feed one value per window; get a Transition when the state changes."""

    def __init__(
        self,
        levels: Mapping[str, float],
        hysteresis: float = 0.0,
        min_duration_s: float = 0.0,
        cooldown_s: float = 0.0,
    ) -> None:
        self.levels: list[tuple[str, float]] = sorted(levels.items(), key=lambda item: item[1])
        self.hysteresis = hysteresis
        self.min_duration_s = min_duration_s
        self.cooldown_s = cooldown_s
        self.active: int | None = None  # index into self.levels
        self._above_since: list[datetime | None] = [None] * len(self.levels)
        self._last_raised: list[datetime | None] = [None] * len(self.levels)

    @property
    def state(self) -> str:
        return CLEAR if self.active is None else self.levels[self.active][0]

    def update(self, value: float, window_start: datetime, window_end: datetime) -> Transition | None:
        for index, (_, threshold) in enumerate(self.levels):
            if value >= threshold:
                if self._above_since[index] is None:
                    self._above_since[index] = window_start
            else:
                self._above_since[index] = None

        target = self._held_level(value)
        raised = self._raisable_level(value, window_end)
        if raised is not None and (target is None or raised > target):
            target = raised
        if target == self.active:
            return None

        previous = self.state
        if target is not None and (self.active is None or target > self.active):
            name, threshold = self.levels[target]
            self._last_raised[target] = window_end
            since = self._above_since[target] or window_start
        else:
            # Falling: the boundary crossed is the hold boundary of the level we leave.
            threshold = self.levels[self.active][1] - self.hysteresis  # type: ignore[index]
            name = CLEAR if target is None else self.levels[target][0]
            since = window_start
        self.active = target
        return Transition(level=name, previous=previous, threshold=threshold, since=since)

    def _held_level(self, value: float) -> int | None:
        """The highest level at or below the active one that the value still holds."""
        if self.active is None:
            return None
        for index in range(self.active, -1, -1):
            if value >= self.levels[index][1] - self.hysteresis:
                return index
        return None

    def _raisable_level(self, value: float, window_end: datetime) -> int | None:
        """The highest level above the active one whose raise conditions all hold now."""
        lowest = -1 if self.active is None else self.active
        for index in range(len(self.levels) - 1, lowest, -1):
            above_since = self._above_since[index]
            if above_since is None:
                continue
            if (window_end - above_since).total_seconds() < self.min_duration_s:
                continue
            last = self._last_raised[index]
            if last is not None and (window_end - last).total_seconds() < self.cooldown_s:
                continue
            return index
        return None


class MovingMean:
    """Mean of the last `size` values."""

    def __init__(self, size: int) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def update(self, value: float) -> float:
        self._values.append(value)
        return float(sum(self._values) / len(self._values))


class RateMeter:
    """People per second between now and `window_s` ago; None until a full window is seen."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[datetime, float]] = deque()

    def update(self, value: float, at: datetime) -> float | None:
        self._samples.append((at, value))
        while len(self._samples) > 2 and (at - self._samples[1][0]).total_seconds() >= self.window_s:
            self._samples.popleft()  # keep the newest sample that is a full window old
        oldest_at, oldest_value = self._samples[0]
        span = (at - oldest_at).total_seconds()
        if span < self.window_s or span <= 0:
            return None
        return (value - oldest_value) / span


# --- zones -------------------------------------------------------------------------------


def _clip_to_rect(points: list[tuple[float, float]], x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    """Sutherland-Hodgman: the part of a polygon inside an axis-aligned rectangle."""

    def clip(polygon: list[tuple[float, float]], inside, intersect) -> list[tuple[float, float]]:
        result: list[tuple[float, float]] = []
        for index, current in enumerate(polygon):
            previous = polygon[index - 1]
            if inside(current):
                if not inside(previous):
                    result.append(intersect(previous, current))
                result.append(current)
            elif inside(previous):
                result.append(intersect(previous, current))
        return result

    def at_x(x: float):
        return lambda p, q: (x, p[1] + (q[1] - p[1]) * (x - p[0]) / (q[0] - p[0]))

    def at_y(y: float):
        return lambda p, q: (p[0] + (q[0] - p[0]) * (y - p[1]) / (q[1] - p[1]), y)

    for inside, intersect in (
        (lambda p: p[0] >= x0, at_x(x0)),
        (lambda p: p[0] <= x1, at_x(x1)),
        (lambda p: p[1] >= y0, at_y(y0)),
        (lambda p: p[1] <= y1, at_y(y1)),
    ):
        points = clip(points, inside, intersect)
        if not points:
            break
    return points


def zone_weights(zone: ZoneSettings, frame_size: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """grid_h x grid_w weights in [0, 1]: how much of each patch lies in the zone."""
    grid_h, grid_w = grid
    weights = np.zeros((grid_h, grid_w), dtype=np.float64)
    if zone.patches is not None:
        for row, col in zone.patches:
            if row < grid_h and col < grid_w:  # patches outside this model's grid count nothing
                weights[row, col] = 1.0
        return weights
    assert zone.polygon is not None
    width, height = frame_size
    cell_w, cell_h = width / grid_w, height / grid_h
    polygon = [(float(x), float(y)) for x, y in zone.polygon]
    for row in range(grid_h):
        for col in range(grid_w):
            x0, y0 = col * cell_w, row * cell_h
            inside = _clip_to_rect(polygon, x0, y0, x0 + cell_w, y0 + cell_h)
            if len(inside) >= 3:
                weights[row, col] = min(1.0, polygon_area(inside) / (cell_w * cell_h))
    return weights


class _ZoneCounter:
    """A zone's count from patch counts, with the weights cached per frame size and grid."""

    def __init__(self, zone: ZoneSettings) -> None:
        self.zone = zone
        self._key: tuple[tuple[int, int], tuple[int, int]] | None = None
        self._weights: np.ndarray | None = None

    def count(self, patch_counts: np.ndarray, frame_size: tuple[int, int]) -> float:
        key = (tuple(frame_size), tuple(patch_counts.shape))
        if key != self._key:
            self._weights = zone_weights(self.zone, key[0], key[1])  # type: ignore[arg-type]
            self._key = key  # type: ignore[assignment]
        return float(np.sum(patch_counts * self._weights))


# --- per camera ----------------------------------------------------------------------------


class CameraAlerts:
    """Every alert of one camera: the scene's levels, its surge, and each zone's levels."""

    def __init__(self, camera: str, config: CameraConfig) -> None:
        self.camera = camera
        self.config = config
        alerts = config.alerts
        self._scene_mean = MovingMean(alerts.smoothing_windows)
        self._scene = LevelTracker(alerts.levels, alerts.hysteresis, alerts.min_duration_s, alerts.cooldown_s)
        self._rate: RateMeter | None = None
        self._surge: LevelTracker | None = None
        if alerts.surge.rate_per_s is not None:
            self._rate = RateMeter(alerts.surge.window_s)
            self._surge = LevelTracker({SURGE: alerts.surge.rate_per_s}, 0.0, alerts.min_duration_s, alerts.cooldown_s)
        self._zones: dict[str, tuple[_ZoneCounter, MovingMean, LevelTracker]] = {}
        for name, zone in config.zones.items():
            hysteresis = alerts.hysteresis if zone.hysteresis is None else zone.hysteresis
            self._zones[name] = (
                _ZoneCounter(zone),
                MovingMean(alerts.smoothing_windows),
                LevelTracker(zone.levels, hysteresis, alerts.min_duration_s, alerts.cooldown_s),
            )

    def update(self, result: CountResult) -> list[AlertEvent]:
        if not self.config.alerts.enabled:
            return []
        events: list[AlertEvent] = []
        scene = self._scene_mean.update(result.count)
        self._track(events, result, None, "level", self._scene, scene)
        if self._rate is not None and self._surge is not None:
            rate = self._rate.update(scene, result.window_end)
            if rate is not None:
                self._track(events, result, None, "surge", self._surge, rate)
        for name, (counter, mean, tracker) in self._zones.items():
            value = mean.update(counter.count(np.asarray(result.patch_counts, dtype=np.float64), result.frame_size))
            self._track(events, result, name, "level", tracker, value)
        return events

    def _track(self, events: list[AlertEvent], result: CountResult, zone: str | None,
               kind: AlertKind, tracker: LevelTracker, value: float) -> None:
        if not tracker.levels:
            return
        change = tracker.update(value, result.window_start, result.window_end)
        if change is not None:
            events.append(AlertEvent(
                camera=self.camera, zone=zone, kind=kind, level=change.level, previous=change.previous,
                value=value, threshold=change.threshold, since=change.since, window_end=result.window_end,
            ))

    def states(self) -> dict[tuple[str | None, AlertKind], str]:
        """The current state of each alert, e.g. {(None, "level"): "warn", ("exit", "level"): "clear"}."""
        states: dict[tuple[str | None, AlertKind], str] = {}
        if self._scene.levels:
            states[(None, "level")] = self._scene.state
        if self._surge is not None:
            states[(None, "surge")] = self._surge.state
        for name, (_, _, tracker) in self._zones.items():
            if tracker.levels:
                states[(name, "level")] = tracker.state
        return states


class AlertEngine:
    """Alerts of all cameras; results of cameras it does not know give no events."""

    def __init__(self, cameras: Mapping[str, CameraConfig]) -> None:
        self._cameras: dict[str, CameraAlerts] = {}
        self.configure(cameras)

    def configure(self, cameras: Mapping[str, CameraConfig]) -> None:
        """Adopt a new camera set (config reload): a camera whose config is unchanged keeps its
        alert state; changed or new cameras start clear; removed ones are forgotten."""
        self._cameras = {
            name: (
                self._cameras[name]
                if name in self._cameras and self._cameras[name].config == config
                else CameraAlerts(name, config)
            )
            for name, config in cameras.items()
        }

    def update(self, result: CountResult) -> list[AlertEvent]:
        camera = self._cameras.get(result.camera)
        return [] if camera is None else camera.update(result)

    def states(self) -> dict[str, dict[tuple[str | None, AlertKind], str]]:
        return {name: camera.states() for name, camera in self._cameras.items()}

    @property
    def cameras(self) -> Sequence[str]:
        return list(self._cameras)
