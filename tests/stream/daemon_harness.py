"""Helpers for tests that run the real `avcc-stream run` as a child process and watch it
from the outside: its JSON log, its systemd notifications, what an MQTT subscriber receives,
its /healthz, and its RSS and open file descriptors.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from avcc_stream.stream.localservices import Mosquitto

REPO = Path(__file__).resolve().parents[2]


def wait_until(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy (returned); AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


# --------------------------------------------------------------------------------------
# the daemon


class DaemonProcess:
    """`python -m avcc_stream run --config FILE` with its log in a file; start/stop/kill it."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self.env = dict(os.environ, **(env or {}))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "avcc_stream", "run", "--config", str(self.config)],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=self.env,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> tuple[int, float]:
        """SIGTERM; (exit status, seconds it took)."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def records(self) -> list[dict[str, Any]]:
        """Every JSON line of the log so far (other lines are kept as {"raw": line})."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line, "event": None})
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") == name]

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- resources, from /proc

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def threads(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise AssertionError("no Threads")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


# --------------------------------------------------------------------------------------
# systemd notifications


class NotifySocket:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET; records every message."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "notify.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.2)
        self.messages: list[tuple[float, list[str]]] = []  # (time.time(), assignments)
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while self._running:
            try:
                data = self._sock.recv(4096)
            except OSError:
                continue
            with self._lock:
                self.messages.append((time.time(), data.decode().split("\n")))

    def assignments(self) -> list[str]:
        """Every assignment in order, WATCHDOG=1 left out."""
        with self._lock:
            return [a for _, message in self.messages for a in message if a != "WATCHDOG=1"]

    def count(self, assignment: str) -> int:
        with self._lock:
            return sum(assignment in message for _, message in self.messages)

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2)
        self._sock.close()


# --------------------------------------------------------------------------------------
# what leaves the daemon


@dataclass(frozen=True)
class Received:
    at: float  # time.time() at receipt
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> dict[str, Any]:
        return json.loads(self.payload)


class Inbox:
    """A subscriber of `topics` with a session the broker keeps (clean_session=False, QoS 1):
    on a broker with persistence, what is published while this client is reconnecting (the
    broker restarted) is queued for it, so the inbox shows what the daemon delivered."""

    def __init__(self, port: int, *topics: str, client_id: str) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self._client.reconnect_delay_set(min_delay=0.1, max_delay=0.3)  # type: ignore[arg-type]
        self._topics = topics
        self._subscribed = threading.Event()
        self._client.on_connect = lambda c, u, f, reason, p: c.subscribe([(t, 1) for t in self._topics])
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message
        self._port = port

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append(Received(time.time(), message.topic, bytes(message.payload), bool(message.retain)))

    def start(self) -> Inbox:
        self._client.connect_async("127.0.0.1", self._port, keepalive=5)
        self._client.loop_start()
        assert self._subscribed.wait(10), "the test subscriber could not subscribe"
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def messages(self, topic: str | None = None) -> list[Received]:
        with self._lock:
            return [m for m in self.received if topic is None or m.topic == topic]

    def payloads(self, camera: str, kind: str, prefix: str = "crowd") -> list[dict[str, Any]]:
        return [m.json() for m in self.messages(f"{prefix}/{camera}/{kind}")]

    def distinct_ids(self, camera: str, kind: str = "count") -> list[str]:
        """Ids in order of first arrival, duplicates (QoS 1, replays) dropped as a consumer would."""
        return list(dict.fromkeys(p["id"] for p in self.payloads(camera, kind)))


def persistent_broker(folder: Path) -> Mosquitto:
    """mosquitto keeping sessions and queued messages across its own restart."""
    store = folder / "mosquitto-store"
    store.mkdir(parents=True, exist_ok=True)
    return Mosquitto(folder, extra_config=f"persistence true\npersistence_location {store}/\n")


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def spooled_ids(spool_file: Path, kind: str = "count") -> list[str]:
    """Record ids waiting in a spool file, oldest first (read-only; safe while a daemon runs)."""
    db = sqlite3.connect(f"file:{spool_file}?mode=ro", uri=True)
    try:
        return [row[0] for row in db.execute("SELECT record_id FROM records WHERE kind = ? ORDER BY seq", (kind,))]
    finally:
        db.close()


def window_ms(record_id: str) -> int:
    """`gate:count:1714564801000` -> 1714564801000."""
    return int(record_id.rsplit(":", 1)[1])


def gaps(ids: list[str]) -> list[int]:
    """Steps (ms) between consecutive windows that are not about one second: holes in a series
    (the wall-clock mapping may move a window end by a few ms, a missing window is 1 s)."""
    stamps = [window_ms(i) for i in ids]
    return [b - a for a, b in zip(stamps, stamps[1:]) if not 500 < b - a < 1500]
