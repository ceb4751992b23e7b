"""What a config reload changes (pure logic): which cameras start, stop, restart or only reset
their alerts, which sections apply at once and which wait for a restart."""

from __future__ import annotations

from avcc_stream.config import parse_config
from avcc_stream.stream.reload import plan_reload

BASE = """
mqtt: {host: 127.0.0.1, port: 1883, client_id: plan}
alerts: {levels: {warn: 50}}
cameras:
  gate: {url: rtsp://10.0.0.1/gate}
  bar: {url: rtsp://10.0.0.2/bar}
  stage: {url: rtsp://10.0.0.3/stage}
  old: {url: rtsp://10.0.0.4/old}
"""


def config(text: str = BASE, **replace: str):  # noqa: ANN201
    for old, new in replace.items():
        text = text.replace(old, new)
    return parse_config(text, environ={})


def test_an_identical_config_changes_nothing() -> None:
    plan = plan_reload(config(), config())
    assert not (plan.added or plan.removed or plan.restarted or plan.realerted)
    assert plan.unchanged == ("bar", "gate", "old", "stage")
    assert plan.live_sections == () and plan.restart_needed == ()


def test_cameras_are_added_removed_restarted_or_only_realerted() -> None:
    new = config(BASE.replace("  old: {url: rtsp://10.0.0.4/old}\n", "  new: {file: /srv/new.mp4, loop: true}\n")
                 .replace("rtsp://10.0.0.2/bar}", "rtsp://10.0.0.2/bar, watchdog_s: 20}")
                 .replace("rtsp://10.0.0.3/stage}", "rtsp://10.0.0.3/stage, alerts: {levels: {warn: 10}}}"))
    plan = plan_reload(config(), new)
    assert list(plan.added) == ["new"] and plan.removed == ("old",)
    assert list(plan.restarted) == ["bar"] and plan.restarted["bar"].watchdog_s == 20
    assert plan.realerted == ("stage",) and plan.unchanged == ("gate",)


def test_a_global_default_change_restarts_every_camera_that_inherits_it() -> None:
    new = config(BASE.replace("cameras:", "camera_defaults: {read_timeout_s: 9}\ncameras:"))
    plan = plan_reload(config(), new)
    assert sorted(plan.restarted) == ["bar", "gate", "old", "stage"]
    new_alerts = config(BASE.replace("warn: 50", "warn: 60"))
    assert plan_reload(config(), new_alerts).realerted == ("bar", "gate", "old", "stage")


def test_disabling_a_camera_removes_it() -> None:
    plan = plan_reload(config(), config(BASE.replace("rtsp://10.0.0.4/old}", "rtsp://10.0.0.4/old, enabled: false}")))
    assert plan.removed == ("old",) and not plan.added


def test_live_sections_apply_and_the_others_keep_their_running_values_until_a_restart() -> None:
    new = config(BASE.replace("client_id: plan}", "client_id: plan, publish_timeout_s: 9}")
                 + "hotspots: {top_k: 1}\nlogging: {level: DEBUG}\nmodel: {device: cpu}\n")
    plan = plan_reload(config(), new)
    assert plan.live_sections == ("logging", "hotspots")
    assert plan.restart_needed == ("model", "mqtt")
    assert plan.effective.hotspots.top_k == 1 and plan.effective.logging.level == "DEBUG"
    assert plan.effective.mqtt.publish_timeout_s == 5.0  # the running value is kept
    assert plan.effective.model.device == "auto"
    assert plan.summary["needs_restart"] == ["model", "mqtt"]
