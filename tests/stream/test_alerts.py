"""Alert state machine, in tables: each row feeds one count per second and lists the events
(second, level) it must produce — and, by omission, every window that must stay silent."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from avcc_stream.config.camera import CameraConfig
from avcc_stream.config.zones import ZoneSettings
from avcc_stream.stream.alerts import AlertEngine, AlertEvent, LevelTracker, zone_weights
from tests.stream.record_samples import at, result


def camera(alerts: dict[str, Any], zones: dict[str, Any] | None = None) -> CameraConfig:
    return CameraConfig.model_validate({"url": "rtsp://h/x", "alerts": alerts, "zones": zones or {}})


def run(config: CameraConfig, counts: list[float], **window: Any) -> list[AlertEvent]:
    engine = AlertEngine({"gate1": config})
    events: list[AlertEvent] = []
    for second, count in enumerate(counts, start=1):
        events += engine.update(result(count, second, **window))
    return events


def timeline(events: list[AlertEvent]) -> list[tuple[int, str | None, str]]:
    start = at(0)
    return [(int((e.window_end - start).total_seconds()), e.zone, e.level) for e in events]


LEVELS = {"warn": 10, "critical": 20}

SCENE_TABLE = [
    pytest.param(
        {"levels": LEVELS, "hysteresis": 2},
        [5, 10, 9, 8.5, 7.9, 10, 20, 18.5, 17.9, 7],
        [(2, "warn"), (5, "clear"), (6, "warn"), (7, "critical"), (9, "warn"), (10, "clear")],
        id="hysteresis-holds-until-below-threshold-minus-hysteresis",
    ),
    pytest.param(
        {"levels": LEVELS},
        [10, 9.99, 10, 10, 25, 25, 0],
        [(1, "warn"), (2, "clear"), (3, "warn"), (5, "critical"), (7, "clear")],
        id="no-hysteresis-flaps-at-the-threshold",
    ),
    pytest.param(
        {"levels": {"warn": 10}, "min_duration_s": 3},
        [12, 12, 9, 12, 12, 12, 12, 3],
        [(6, "warn"), (8, "clear")],
        id="min-duration-needs-an-unbroken-run",
    ),
    pytest.param(
        {"levels": {"warn": 10}, "cooldown_s": 10},
        [12, 5] + [12] * 10,
        [(1, "warn"), (2, "clear"), (11, "warn")],
        id="cooldown-delays-the-next-raise-of-the-same-level",
    ),
    pytest.param(
        {"levels": LEVELS, "cooldown_s": 60},
        [12, 25, 12, 25],
        [(1, "warn"), (2, "critical"), (3, "warn")],
        id="cooldown-never-delays-an-escalation-to-a-fresh-level",
    ),
    pytest.param(
        {"levels": {"warn": 10}, "smoothing_windows": 3},
        [0, 0, 25, 0, 0, 0, 20, 20, 0, 0, 0],
        [(8, "warn"), (10, "clear")],
        id="smoothing-ignores-a-one-second-spike",
    ),
    pytest.param(
        {"levels": {"warn": 10}, "surge": {"rate_per_s": 2, "window_s": 5}},
        [1] * 6 + [9] * 6,
        [],
        id="surge-below-levels-and-rate-stays-silent",
    ),
]


@pytest.mark.parametrize(("alerts", "counts", "expected"), SCENE_TABLE)
def test_scene_levels(alerts: dict[str, Any], counts: list[float], expected: list[tuple[int, str]]) -> None:
    assert [(t, level) for t, _, level in timeline(run(camera(alerts), counts))] == expected


SURGE_TABLE = [
    pytest.param(
        [10] * 6 + [25] * 6,
        [(7, "surge"), (12, "clear")],
        id="a-jump-raises-a-surge-that-clears-when-the-window-passes-it",
    ),
    pytest.param([10 + s for s in range(12)], [], id="steady-growth-below-the-rate-is-no-surge"),
    pytest.param([0, 100, 100], [], id="no-surge-before-a-full-window-was-seen"),
    pytest.param([30] * 6 + [0] * 6, [], id="a-fall-is-not-a-surge"),
]


@pytest.mark.parametrize(("counts", "expected"), SURGE_TABLE)
def test_surge_on_rate_of_change(counts: list[float], expected: list[tuple[int, str]]) -> None:
    events = run(camera({"surge": {"rate_per_s": 2, "window_s": 5}}), counts)
    assert [(t, level) for t, _, level in timeline(events)] == expected
    assert all(e.kind == "surge" for e in events)
    if events:
        assert events[0].value == pytest.approx(3.0) and events[0].threshold == 2  # (25 - 10) / 5 s


def test_event_carries_camera_zone_level_value_threshold_since_and_window_end() -> None:
    events = run(camera({"levels": LEVELS, "hysteresis": 2, "min_duration_s": 2}), [4, 11, 12, 13, 7.5])
    raised, cleared = events
    assert (raised.camera, raised.zone, raised.kind, raised.level, raised.previous) == ("gate1", None, "level", "warn", "clear")
    assert (raised.value, raised.threshold, raised.since, raised.window_end) == (12, 10, at(1), at(3))
    assert (cleared.level, cleared.previous, cleared.value, cleared.threshold) == ("clear", "warn", 7.5, 8)
    assert cleared.since == at(4) and cleared.window_end == at(5)


def test_level_tracker_emits_only_on_state_change() -> None:
    tracker = LevelTracker({"warn": 10})
    changes = [tracker.update(v, at(s - 1), at(s)) for s, v in enumerate([11, 12, 13, 9, 8], start=1)]
    assert [c.level if c else None for c in changes] == ["warn", None, None, "clear", None]


# --- zones ---------------------------------------------------------------------------------


def test_polygon_weights_are_each_patch_area_inside_the_polygon() -> None:
    half_and_a_bit = ZoneSettings(polygon=[(0, 0), (240, 0), (240, 480), (0, 480)])
    weights = zone_weights(half_and_a_bit, (640, 480), (4, 4))
    np.testing.assert_allclose(weights, np.tile([1.0, 0.5, 0.0, 0.0], (4, 1)))

    triangle = ZoneSettings(polygon=[(0, 0), (160, 0), (0, 120)])  # half of patch (0, 0)
    weights = zone_weights(triangle, (640, 480), (4, 4))
    assert weights[0, 0] == pytest.approx(0.5) and weights.sum() == pytest.approx(0.5)

    # A concave L covering patches (0,0), (1,0) and (1,1) of a 2x2 grid on a 100x100 frame.
    ell = ZoneSettings(polygon=[(0, 0), (50, 0), (50, 50), (100, 50), (100, 100), (0, 100)])
    np.testing.assert_allclose(zone_weights(ell, (100, 100), (2, 2)), [[1, 0], [1, 1]])


def test_patch_zone_weights_ignore_patches_outside_the_grid() -> None:
    zone = ZoneSettings(patches=[(0, 0), (3, 3), (9, 9)])
    weights = zone_weights(zone, (640, 480), (4, 4))
    assert weights.sum() == 2 and weights[0, 0] == 1 and weights[3, 3] == 1


ZONES = {
    "left": {"polygon": [[0, 0], [320, 0], [320, 480], [0, 480]], "levels": {"warn": 8}, "hysteresis": 1},
    "corner": {"patches": [[0, 0]], "levels": {"critical": 5}},
}


def crowd(left_people: float, corner_people: float) -> np.ndarray:
    """4x4 patch counts: people spread over the left two columns, extra ones in patch (0, 0)."""
    counts = np.zeros((4, 4))
    counts[:, :2] = left_people / 8
    counts[0, 0] += corner_people
    return counts


def test_zone_alerts_follow_the_people_inside_each_zone() -> None:
    config = camera({"levels": {"warn": 100}}, ZONES)
    engine = AlertEngine({"gate1": config})
    frames = [(4, 0), (10, 0), (10, 6), (6.5, 6), (6.5, 0)]
    events = []
    for second, (left, corner) in enumerate(frames, start=1):
        patches = crowd(left, corner)
        events += engine.update(result(float(patches.sum()), second, patch_counts=patches))
    assert timeline(events) == [
        (2, "left", "warn"),  # 10 people in the left half
        (3, "corner", "critical"),  # 10/8 + 6 people in patch (0, 0)
        (5, "left", "clear"),  # 6.5 < 8 - 1 (the zone's own hysteresis)
        (5, "corner", "clear"),
    ]
    assert events[0].value == pytest.approx(10) and events[0].threshold == 8
    assert events[1].value == pytest.approx(10 / 8 + 6) and events[1].threshold == 5
    assert engine.states()["gate1"] == {(None, "level"): "clear", ("left", "level"): "clear", ("corner", "level"): "clear"}


def test_engine_ignores_unknown_cameras_and_disabled_alerts() -> None:
    engine = AlertEngine({"gate1": camera({"levels": {"warn": 1}, "enabled": False})})
    assert engine.update(result(50, 1)) == []
    assert engine.update(result(50, 1, camera="other")) == []


def test_reload_keeps_state_of_unchanged_cameras_and_resets_changed_ones() -> None:
    warn10 = camera({"levels": {"warn": 10}})
    engine = AlertEngine({"gate1": warn10, "bar": warn10})
    assert len(engine.update(result(20, 1))) == 1 and len(engine.update(result(20, 1, camera="bar"))) == 1
    engine.configure({"gate1": warn10, "bar": camera({"levels": {"warn": 15}})})
    assert engine.update(result(20, 2)) == []  # still warn: no second raise after a reload
    assert [e.level for e in engine.update(result(20, 2, camera="bar"))] == ["warn"]  # new config, fresh state
    engine.configure({"gate1": warn10})
    assert engine.cameras == ["gate1"]
