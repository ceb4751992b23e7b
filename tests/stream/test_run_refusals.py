"""`avcc-stream run` refuses what it cannot run with one clear line (exit 2) naming the file,
the line or the address: unusable checkpoints, unsafe camera names, a busy metrics port, a
state directory it cannot write. And the metrics endpoint is on loopback unless configured."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from avcc_stream.cli import main
from avcc_stream.config import AppConfig, parse_config
from avcc_stream.stream.infer import load_models
from avcc_stream.stream.service import Service
from tests.model.helpers import SMALL_WIDTHS, make_random_checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    return {"av": make_random_checkpoint(folder, "cc-av-lowres", **SMALL_WIDTHS),
            "v": make_random_checkpoint(folder, "cc-v-lowres", **SMALL_WIDTHS)}


def base(checkpoint: Path | str, fallback: Path | str, extra: str = "") -> str:
    return (f'model: {{checkpoint: "{checkpoint}", fallback_checkpoint: "{fallback}", device: cpu}}\n'
            'mqtt: {enabled: false}\nmetrics: {listen: "127.0.0.1:0"}\n' + extra +
            "cameras:\n  gate: {url: rtsp://127.0.0.1:1/gate}\n")


@pytest.mark.parametrize("which", ["checkpoint", "fallback"])
@pytest.mark.parametrize(("content", "message"), [
    (b"", "checkpoint file is empty (0 bytes)"),
    (b"\x93NUMPY garbage" * 100, "not a readable safetensors checkpoint (truncated or corrupt?)"),
])
def test_an_empty_or_garbage_checkpoint_is_refused_at_start_naming_the_file(
        tmp_path: Path, checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str],
        which: str, content: bytes, message: str) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    paths = {"checkpoint": checkpoints["av"], "fallback": checkpoints["v"], which: bad}
    config = tmp_path / "avcc.yaml"
    config.write_text(base(paths["checkpoint"], paths["fallback"]))
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"avcc-stream run: error: cannot load the model: {bad}: {message}")
    assert len(err.splitlines()) == 1  # one line, no traceback


@pytest.mark.parametrize("name", ["gate+1", "gate#", "gate/1"])
def test_a_camera_name_that_would_break_topics_or_keys_is_a_config_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    config = tmp_path / "avcc.yaml"
    config.write_text(f'mqtt: {{enabled: false}}\ncameras:\n  "{name}": {{url: rtsp://127.0.0.1:1/x}}\n')
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}:3:3: cameras.{name}: invalid camera name {name!r}" in err
    assert "no '+', '#', '/', ':' or spaces" in err


def test_a_busy_metrics_port_is_refused_naming_the_address(tmp_path: Path, checkpoints: dict[str, Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "avcc.yaml"
        config.write_text(base(checkpoints["av"], checkpoints["v"]).replace("127.0.0.1:0", f"127.0.0.1:{port}"))
        assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"cannot serve metrics on 127.0.0.1:{port}: Address already in use" in err and "metrics.listen" in err


def test_a_state_directory_that_cannot_be_created_is_refused_naming_it(
        tmp_path: Path, checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    in_the_way = tmp_path / "a-file"  # not a directory: fails for root too
    in_the_way.write_text("")
    state = in_the_way / "state"
    config = tmp_path / "avcc.yaml"
    config.write_text(base(checkpoints["av"], checkpoints["v"], f'state_dir: "{state}"\n')
                      .replace("mqtt: {enabled: false}", "mqtt: {port: 1, connect_timeout_s: 0.2}"))
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"cannot create spool '{state / 'spool' / 'mqtt.sqlite3'}': Not a directory" in err
    assert "state_dir" in err


def test_metrics_listen_on_loopback_unless_configured(checkpoints: dict[str, Path]) -> None:
    assert AppConfig().metrics.listen == "127.0.0.1:9464"
    models = load_models(str(checkpoints["av"]), str(checkpoints["v"]), ["cpu"])
    app = parse_config(base(checkpoints["av"], checkpoints["v"]), environ={})
    service = Service.from_config("avcc.yaml", app, models=models)
    try:
        assert service.server is not None and service.server.host == "127.0.0.1"
    finally:
        service.server.close()
    off = parse_config(base(checkpoints["av"], checkpoints["v"]).replace('listen: "127.0.0.1:0"', "enabled: false"),
                       environ={})
    assert Service.from_config("avcc.yaml", off, models=models).server is None
