"""Config loading: the documented example, defaults merged into cameras, env/file/systemd
secrets that never leak, and errors that point at the right place."""

from __future__ import annotations

from pathlib import Path

import pytest

from avcc_stream.config import AppConfig, ConfigError, effective_camera_config, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "example.yaml"


def test_documented_example_loads_with_every_camera() -> None:
    app = load_config(EXAMPLE, environ={})
    assert set(app.cameras) == {"gate1", "bar", "stage", "rehearsal"}
    assert set(app.enabled_cameras()) == {"gate1", "bar", "stage"}
    gate1 = effective_camera_config(app, "gate1")
    assert gate1.alerts.levels == {"warn": 80, "critical": 120}  # the camera's own levels
    assert gate1.alerts.smoothing_windows == 5  # inherited from the global alerts
    assert gate1.zones["exit"].patches == [(0, 6), (0, 7), (1, 7)]
    assert "secret" not in gate1.source_label  # credentials in the URL are redacted
    assert app.cameras["bar"].audio == "off"  # YAML's bare `off` (a boolean) still means off
    assert app.cameras["bar"].watchdog_s == 20 and app.cameras["stage"].watchdog_s == 10
    with pytest.raises(KeyError, match="no camera named 'nope'"):
        effective_camera_config(app, "nope")


def test_camera_overrides_merge_key_by_key_and_levels_replace_whole() -> None:
    app = parse_config(
        """
camera_defaults:
  reconnect: {initial_s: 2, max_s: 60}
  align: {max_audio_wait_s: 1.5}
alerts:
  levels: {warn: 50, critical: 90}
  hysteresis: 4
  surge: {rate_per_s: 3, window_s: 20}
cameras:
  a:
    url: rtsp://h/a
    reconnect: {max_s: 10}
    alerts:
      levels: {warn: 30}
      surge: {window_s: 5}
  b:
    url: rtsp://h/b
""",
        environ={},
    )
    a, b = effective_camera_config(app, "a"), effective_camera_config(app, "b")
    assert (a.reconnect.initial_s, a.reconnect.max_s) == (2, 10)
    assert a.align.max_audio_wait_s == 1.5
    assert a.alerts.levels == {"warn": 30} and a.alerts.hysteresis == 4
    assert (a.alerts.surge.rate_per_s, a.alerts.surge.window_s) == (3, 5)
    assert b.alerts.levels == {"warn": 50, "critical": 90} and b.reconnect.max_s == 60


def test_models_built_in_code_merge_the_same_way() -> None:
    app = AppConfig.model_validate({"camera_defaults": {"watchdog_s": 3}, "cameras": {"x": {"file": "/tmp/a.mp4", "loop": True}}})
    assert app.cameras["x"].watchdog_s == 3 and app.cameras["x"].loop


def test_environment_variables_expand_with_defaults_and_dollar_escape() -> None:
    app = parse_config(
        """
mqtt:
  host: ${BROKER_HOST}
  port: ${BROKER_PORT:-1884}
  username: avcc
  password: ${MQTT_PASSWORD}
  client_id: cost-$$5
""",
        environ={"BROKER_HOST": "broker.venue", "MQTT_PASSWORD": "pa55"},
    )
    assert app.mqtt.host == "broker.venue" and app.mqtt.port == 1884
    assert app.mqtt.password is not None and app.mqtt.password.get_secret_value() == "pa55"
    assert app.mqtt.client_id == "cost-$5"


def test_password_from_file_and_from_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mqtt-pass").write_text("from-file\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "redis-password").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    app = parse_config(
        f"""
mqtt: {{username: avcc, password_file: {tmp_path / 'mqtt-pass'}}}
redis: {{enabled: true, password_credential: redis-password}}
""",
    )
    assert app.mqtt.password is not None and app.mqtt.password.get_secret_value() == "from-file"
    assert app.redis.password is not None and app.redis.password.get_secret_value() == "from-systemd"
    shown = repr(app) + str(app.model_dump()) + app.model_dump_json()
    assert "from-file" not in shown and "from-systemd" not in shown


def test_systemd_credential_without_credentials_directory_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match=r"redis.password_credential: .*CREDENTIALS_DIRECTORY"):
        parse_config("redis:\n  password_credential: redis-password\n")


def test_errors_never_echo_secrets_or_url_credentials() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            """
mqtt:
  password: [hunter2]
camera_defaults:
  transport: "rtsp://user:camsecret@10.0.0.1/x"
""",
            environ={},
        )
    text = str(caught.value)
    assert "hunter2" not in text and "camsecret" not in text
    assert "camera_defaults.transport" in text and "rtsp://***@10.0.0.1/x" in text


def test_every_problem_is_reported_at_once_and_global_defaults_only_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            """
inference:
  max_batch: 0
alerts:
  hysteresis: -1
cameras:
  a: {url: rtsp://h/a}
  b: {url: rtsp://h/b}
""",
            "venue.yaml",
        )
    issues = caught.value.issues
    assert [(issue.path, issue.line) for issue in issues] == [("inference.max_batch", 3), ("alerts.hysteresis", 5)]


def test_rule_broken_by_an_inherited_value_says_where_the_value_comes_from() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            """
alerts:
  levels:
    warn: 3
cameras:
  gate1:
    url: rtsp://h/a
    alerts:
      hysteresis: 5
""",
            "venue.yaml",
        )
    (issue,) = caught.value.issues
    assert issue.path == "cameras.gate1.alerts.levels.warn"
    assert issue.line == 8  # the camera's alerts: section, which sets the hysteresis
    assert "inherited from alerts.levels.warn at line 4" in issue.message


def test_yaml_anchors_and_merge_keys_work_and_errors_still_find_their_line() -> None:
    text = """
x-camera: &camera
  transport: tcp
  watchdog_s: 5
cameras:
  a:
    <<: *camera
    url: rtsp://h/a
  b:
    <<: *camera
    url: rtsp://h/b
    watchdog_s: -2
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    found = {(issue.path, issue.line) for issue in caught.value.issues}
    assert ("x-camera", 2) in found  # unknown top-level key, even when used as an anchor
    assert ("cameras.b.watchdog_s", 12) in found
    app = parse_config(text.replace("x-camera: &camera", "camera_defaults: &camera").replace("-2", "7"), environ={})
    assert app.cameras["a"].watchdog_s == 5 and app.cameras["b"].watchdog_s == 7


def test_unreadable_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing.yaml: cannot read the config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_config(tmp_path / "empty.yaml")


def test_service_sections_default_to_safe_values() -> None:
    app = parse_config("cameras: {gate: {url: rtsp://h/gate}}", environ={})
    assert (app.spool.max_records, app.spool.max_bytes, app.spool.synchronous) == (1_000_000, 256 * 1024 * 1024, "normal")
    assert app.metrics.enabled and app.metrics.address == ("127.0.0.1", 9464)  # loopback unless configured
    assert not app.homeassistant.enabled and app.homeassistant.discovery_prefix == "homeassistant"
    reconnect = app.cameras["gate"].reconnect
    assert (reconnect.initial_s, reconnect.max_s) == (0.5, 2.0)  # a camera back is found within the 5 s promise


def test_state_dir_comes_from_systemd_or_defaults_to_a_local_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert parse_config("{}", environ={}).state_dir == Path("state")
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/avcc-stream:/var/lib/other")  # several: the first
    assert parse_config("{}", environ={}).state_dir == Path("/var/lib/avcc-stream")
    assert parse_config("state_dir: /srv/avcc", environ={}).state_dir == Path("/srv/avcc")


def test_documented_example_sets_every_service_section() -> None:
    text = EXAMPLE.read_text()
    for key in ("spool:", "metrics:", "homeassistant:", "state_dir:", "reconnect_min_s:"):
        assert key in text
    # the credential form the units use (LoadCredential=NAME:avcc-stream.NAME from /etc/credstore)
    assert "LoadCredential=mqtt-password:avcc-stream.mqtt-password" in text
    assert "/etc/credstore/avcc-stream.mqtt-password" in text
    app = load_config(EXAMPLE, environ={})
    assert app.metrics.listen == "127.0.0.1:9464" and app.spool.synchronous == "normal"
