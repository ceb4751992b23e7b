"""Local mosquitto and redis-server on 127.0.0.1: one implementation for the demo, the
benchmarks and the tests.

Each service is a small class that owns one process on one port, so a caller (or a fault
test) can stop it and start it again on the same port: clients see a real outage and a
real comeback.

    with Mosquitto(workdir) as broker:       # starts; stops on exit
        broker.port ...
        broker.stop(); ...; broker.start()   # same port
        broker.kill()                        # SIGKILL, no clean shutdown
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it; we release it at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOCALHOST, 0))
        return int(probe.getsockname()[1])


def port_accepts(port: int, host: str = LOCALHOST, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def find_binary(name: str) -> str:
    """The service's executable; Debian puts mosquitto in /usr/sbin, often off a user's PATH."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if found is None:
        raise RuntimeError(f"{name} is not installed: run `make setup` (apt package {name})")
    return found


class LocalService:
    """One server process listening on 127.0.0.1:`port`, with its output in a log file."""

    name = "service"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir) / f"{self.name}-{id(self):x}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = LOCALHOST
        self.port = port if port is not None else free_port()
        self.log_path = self.workdir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:  # pragma: no cover - each service defines it
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start (again, on the same port) and return once the port accepts connections."""
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self._process.returncode}:\n{self.log_tail()}")
            if port_accepts(self.port):
                return
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on port {self.port} within {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        """Clean shutdown (SIGTERM), SIGKILL if it hangs; returns once the port is closed."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Abrupt death (SIGKILL): no goodbye to clients."""
        self._end(signal.SIGKILL, 5.0)

    def freeze(self) -> None:
        """SIGSTOP: the port stays open but nothing answers (a hung server)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a frozen server must be able to act on SIGTERM
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5.0)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> LocalService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Mosquitto(LocalService):
    """mosquitto 2 with one anonymous listener on 127.0.0.1:port and no persistence.

    `extra_config` lines follow the listener line, so they configure it (certfile, keyfile,
    password_file, ...); it may also set `allow_anonymous` or `persistence` (with
    `persistence_location`), which then replace the defaults. mosquitto 2 cannot bind port 0,
    hence free_port; a restart reuses the same port.
    """

    name = "mosquitto"

    def __init__(self, workdir: Path, port: int | None = None, extra_config: str = "") -> None:
        super().__init__(workdir, port)
        self.extra_config = extra_config
        self.config_path = self.workdir / "mosquitto.conf"

    def command(self) -> list[str]:
        lines = [
            f"listener {self.port} {self.host}",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        # Defaults that extra_config may set otherwise (e.g. persistence for restart tests).
        for option, default in (("persistence", "false"), ("allow_anonymous", "true")):
            if not any(line.split()[:1] == [option] for line in self.extra_config.splitlines()):
                lines.append(f"{option} {default}")
        if os.geteuid() == 0:
            # As root mosquitto drops to the `mosquitto` user, which cannot read files in a
            # test's private temporary folder (certificates, password files).
            lines.append("user root")
        self.config_path.write_text("\n".join(lines) + "\n" + self.extra_config + "\n")
        return [find_binary("mosquitto"), "-c", str(self.config_path)]


class RedisServer(LocalService):
    """redis-server on 127.0.0.1:port with no persistence (nothing written to disk)."""

    name = "redis"

    def __init__(self, workdir: Path, port: int | None = None, extra_args: list[str] | None = None) -> None:
        super().__init__(workdir, port)
        self.extra_args = list(extra_args or [])

    def command(self) -> list[str]:
        return [
            find_binary("redis-server"), "--port", str(self.port), "--bind", self.host,
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir), *self.extra_args,
        ]


def start_mosquitto(workdir: Path) -> tuple[Mosquitto, int]:
    """A running anonymous broker on a free loopback port, and that port."""
    broker = Mosquitto(workdir)
    broker.start()
    return broker, broker.port


def start_redis(workdir: Path) -> tuple[RedisServer, int]:
    """A running redis-server on a free loopback port, and that port."""
    server = RedisServer(workdir)
    server.start()
    return server, server.port


def stop_process(process: subprocess.Popen | LocalService, timeout: float = 10.0) -> int | None:
    """Stop a child process (SIGTERM, then SIGKILL after `timeout`) or a LocalService;
    returns the exit status (None for a service)."""
    if isinstance(process, LocalService):
        process.stop(timeout)
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
