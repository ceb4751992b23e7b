"""The systemd units in deploy/: `systemd-analyze verify` is clean and `systemd-analyze
security` scores them at or below the exposure we measured (lower is safer, 0-10).

`verify` also checks that ExecStart's binary exists. The units name the install path
(/opt/avcc-stream/.venv/bin/avcc-stream), which a development checkout does not have, so we
verify a copy whose ExecStart points at this checkout's own `avcc-stream` entry point (the
same console script, installed in .venv); every other line is the shipped one.
`test_verify_checks_the_install_path` shows what verify says about the untouched file.

systemd-analyze missing is a set-up error (apt package `systemd`, in `make setup`): the
tests fail saying so rather than skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
INSTALLED_BINARY = "/opt/avcc-stream/.venv/bin/avcc-stream"
MAIN_UNIT = "avcc-stream.service"
TEMPLATE_UNIT = "avcc-stream@.service"
GPU_DROPIN = "avcc-stream-gpu.conf"

# Measured with systemd 252 (Debian 12) `systemd-analyze security --offline=true`:
# 1.2 for both units, 1.4 with the GPU drop-in (PrivateDevices=no, NVIDIA DeviceAllow=).
# A change that weakens the sandbox raises the score and fails here.
MAX_EXPOSURE = 1.2
MAX_EXPOSURE_WITH_GPU = 1.4


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail(
            "systemd-analyze is not installed, so the units cannot be checked: install the "
            "`systemd` apt package (`make setup` does)"
        )
    return found


def dev_entry_point() -> str:
    entry_point = Path(sys.executable).parent / "avcc-stream"
    if not entry_point.exists():
        pytest.fail(f"{entry_point} is missing: install this checkout (`pip install -e .`)")
    return str(entry_point)


def verifiable_copy(tmp_path: Path, unit: str, as_name: str | None = None, dropins: tuple[str, ...] = ()) -> Path:
    """deploy/`unit` copied to tmp_path (as `as_name`, e.g. an instance of the template),
    with ExecStart pointed at this checkout's entry point, and drop-ins in NAME.d/."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    text = (DEPLOY / unit).read_text()
    assert INSTALLED_BINARY in text, f"{unit} no longer runs {INSTALLED_BINARY}: update this test"
    target = tmp_path / (as_name or unit)
    target.write_text(text.replace(INSTALLED_BINARY, dev_entry_point()))
    if dropins:
        dropin_dir = tmp_path / f"{unit}.d"  # the template's drop-ins apply to every instance
        dropin_dir.mkdir(exist_ok=True)
        for dropin in dropins:
            shutil.copy(DEPLOY / dropin, dropin_dir / dropin)
    return target


def run(command: list[str]) -> tuple[int, str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    return done.returncode, (done.stdout + done.stderr).strip()


def exposure(systemd_analyze: str, unit_path: Path) -> float:
    code, output = run([systemd_analyze, "security", "--offline=true", "--no-pager", str(unit_path)])
    assert code == 0, output
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
    assert match, f"no exposure score in:\n{output}"
    return float(match.group(1))


@pytest.mark.parametrize(
    ("unit", "as_name", "dropins"),
    [
        (MAIN_UNIT, None, ()),
        (TEMPLATE_UNIT, "avcc-stream@gpu0.service", ()),
        (TEMPLATE_UNIT, "avcc-stream@gpu0.service", (GPU_DROPIN,)),
    ],
)
def test_units_verify_without_a_single_warning(
    systemd_analyze: str, tmp_path: Path, unit: str, as_name: str | None, dropins: tuple[str, ...]
) -> None:
    path = verifiable_copy(tmp_path, unit, as_name, dropins)
    code, output = run([systemd_analyze, "verify", str(path)])
    # verify exits 0 on unknown keys and unparsable values (it only warns): demand silence.
    assert code == 0 and output == "", output


def test_verify_would_catch_a_misspelt_directive(systemd_analyze: str, tmp_path: Path) -> None:
    path = verifiable_copy(tmp_path, MAIN_UNIT)
    path.write_text(path.read_text().replace("ProtectHome=yes", "ProtectHom=yes"))
    code, output = run([systemd_analyze, "verify", str(path)])
    assert "Unknown key 'ProtectHom'" in output


def test_verify_checks_the_install_path(systemd_analyze: str, tmp_path: Path) -> None:
    shipped = tmp_path / MAIN_UNIT
    shutil.copy(DEPLOY / MAIN_UNIT, shipped)
    code, output = run([systemd_analyze, "verify", str(shipped)])
    if Path(INSTALLED_BINARY).exists():  # an installed host: the shipped file verifies as is
        assert code == 0 and output == "", output
    else:
        assert code != 0 and f"{INSTALLED_BINARY} is not executable" in output, output


@pytest.mark.parametrize(
    ("unit", "as_name", "dropins", "limit"),
    [
        (MAIN_UNIT, None, (), MAX_EXPOSURE),
        (TEMPLATE_UNIT, "avcc-stream@shard1.service", (), MAX_EXPOSURE),
        (TEMPLATE_UNIT, "avcc-stream@gpu0.service", (GPU_DROPIN,), MAX_EXPOSURE_WITH_GPU),
    ],
)
def test_security_exposure_stays_at_or_below_the_measured_score(
    systemd_analyze: str, tmp_path: Path, unit: str, as_name: str | None,
    dropins: tuple[str, ...], limit: float,
) -> None:
    score = exposure(systemd_analyze, verifiable_copy(tmp_path, unit, as_name, dropins))
    assert score <= limit, f"{as_name or unit}: exposure {score} > {limit} (sandbox weakened?)"


def test_gpu_dropin_really_changes_the_sandbox(systemd_analyze: str, tmp_path: Path) -> None:
    # Guards the test above: were the drop-in not picked up, its score would prove nothing.
    plain = exposure(systemd_analyze, verifiable_copy(tmp_path / "a", TEMPLATE_UNIT, "avcc-stream@gpu0.service"))
    with_gpu = exposure(
        systemd_analyze, verifiable_copy(tmp_path / "b", TEMPLATE_UNIT, "avcc-stream@gpu0.service", (GPU_DROPIN,))
    )
    assert with_gpu > plain


def service_entries(unit: str) -> list[tuple[str, str]]:
    """(key, value) lines of the [Service] section, in order (keys may repeat)."""
    entries, section = [], None
    for raw in (DEPLOY / unit).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            entries.append((key, value))
    return entries


def test_template_has_exactly_the_main_units_service_settings() -> None:
    """Two files cannot share a sandbox; this keeps them from drifting apart."""
    template = [
        (key, value.replace("/etc/avcc-stream/%i.yaml", "/etc/avcc-stream/config.yaml").replace("/%i", ""))
        for key, value in service_entries(TEMPLATE_UNIT)
    ]
    assert template == service_entries(MAIN_UNIT)


def test_units_carry_the_settings_operations_rely_on() -> None:
    settings = dict(service_entries(MAIN_UNIT))
    assert settings["Type"] == "notify" and float(settings["WatchdogSec"]) > 0
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["Restart"] == "on-failure"
    assert settings["RestartPreventExitStatus"] == "2"  # `avcc-stream run` refusals (bad config...)
    assert settings["StateDirectory"] == "avcc-stream"
    assert settings["ExecStart"] == f"{INSTALLED_BINARY} run --config /etc/avcc-stream/config.yaml"
    assert dict(service_entries(TEMPLATE_UNIT))["StateDirectory"] == "avcc-stream/%i"
    credentials = [value for key, value in service_entries(MAIN_UNIT) if key == "LoadCredential"]
    # Relative sources are looked up in /etc/credstore/ and skipped when absent, so an
    # install without a password still starts (an absolute missing path would be fatal).
    assert credentials and all(not value.split(":", 1)[1].startswith("/") for value in credentials)
