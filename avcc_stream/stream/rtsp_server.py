"""A small local RTSP server (gst-rtsp-server) for the tests and the demo.

This file has two halves:

* `main()` runs under the SYSTEM `/usr/bin/python3`, because GObject introspection (`gi`) is
  an apt package that the venv cannot import. It imports nothing from this package.
* `start_rtsp_server()` runs in the venv: it launches the first half as a child process,
  reads the bound port from its stdout and returns a handle that stops it.

Mount sources:

* `file:PATH`  an MP4/MOV with H.264 or H.265 video and optional AAC, Opus or G.711 audio,
  served as it is (`filesrc ! qtdemux`, no re-encode) at real time. It does not loop: every client starts at
  t=0 and the stream ends at the end of the file.
* `test` / `test-noaudio`  an endless live synthetic source (videotestsrc + x264enc, and
  audiotestsrc + AAC unless `-noaudio`), for tests that need a stream that never ends.
"""

from __future__ import annotations

import argparse
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
READY_PREFIX = "RTSP_PORT="


# --------------------------------------------------------------------------------------
# venv side


@dataclass
class RtspServer:
    """A running child RTSP server; `url(mount)` gives a client URL on 127.0.0.1."""

    process: subprocess.Popen
    port: int
    mounts: dict[str, str] = field(default_factory=dict)
    size: tuple[int, int] = (320, 180)

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount.strip('/')}"

    def kill(self) -> None:
        """SIGKILL: the server vanishes without a goodbye (clients see a dead connection)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def restarted(self) -> RtspServer:
        """A new server with the same mounts on the same port (this one stopped first)."""
        self.stop()
        return start_rtsp_server(self.mounts, width=self.size[0], height=self.size[1], port=self.port)

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> RtspServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_rtsp_server(
    mounts: dict[str, str],
    *,
    width: int = 320,
    height: int = 180,
    port: int = 0,
    startup_timeout: float = 15.0,
    stderr: int | None = subprocess.DEVNULL,
) -> RtspServer:
    """Start a gst-rtsp-server child serving `mounts` ({"cam1": "file:/x.mp4", "cam2": "test"})
    on `port` (0: a free one).

    Returns once the server listens; raises RuntimeError with the child's message otherwise.
    """
    if not Path(SYSTEM_PYTHON).exists():
        raise RuntimeError(f"{SYSTEM_PYTHON} not found: the RTSP server needs the system python3-gi")
    # -I: isolated, so this directory (with its own types.py) does not shadow the stdlib.
    args = [SYSTEM_PYTHON, "-I", "-u", str(Path(__file__).resolve()), "--width", str(width), "--height", str(height),
            "--port", str(port)]
    for mount, source in mounts.items():
        args += ["--mount", f"{mount.strip('/')}={source}"]
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True,
    )
    deadline = time.monotonic() + startup_timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith(READY_PREFIX):
                return RtspServer(process, int(line[len(READY_PREFIX):]), dict(mounts), (width, height))
        elif process.poll() is not None:
            break
    process.kill()
    process.wait()
    raise RuntimeError(
        "RTSP server did not start (exit code {}): {}".format(process.returncode, " | ".join(lines) or "no output")
    )


def encode_test_clip(
    path: str | Path,
    *,
    seconds: float = 10.0,
    size: tuple[int, int] = (320, 180),
    fps: int = 25,
    audio: bool = True,
    sample_rate: int = 48_000,
    channels: int = 2,
    video_codec: str = "h264",
    audio_codec: str = "aac",
) -> Path:
    """An MP4/MOV of ffmpeg's test pattern and a tone, ready to serve as `file:`.

    `video_codec`: h264 or hevc; `audio_codec`: aac, pcm_mulaw or pcm_alaw (G.711, which
    wants 8 kHz mono and a .mov). The GOP is one second (`-g fps`): an RTSP client often misses
    the first keyframe and then waits for the next one, so a long GOP would cost seconds at
    every connect.
    """
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg not found: run `make setup` (apt package ffmpeg)")
    encoders = {"h264": ["-c:v", "libx264", "-preset", "veryfast"],
                "hevc": ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-tag:v", "hvc1"]}
    width, height = size
    args = [ffmpeg, "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}"]
    args += ["-t", f"{seconds}", *encoders[video_codec], "-g", str(fps), "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", audio_codec, "-ac", str(channels), "-ar", str(sample_rate)]
    args += [str(path)]
    subprocess.run(args, check=True)
    return Path(path)


# --------------------------------------------------------------------------------------
# system-python side (gi)

# What IP cameras send: H.264 or H.265 video; AAC, Opus or G.711 (mu-law/A-law, static RTP
# payload types 0 and 8) audio.
RTP_VIDEO_PAYLOADERS = {
    "h264": "h264parse ! rtph264pay name=pay0 pt=96 config-interval=1",
    "hevc": "h265parse ! rtph265pay name=pay0 pt=96 config-interval=1",
}
RTP_AUDIO_PAYLOADERS = {
    "aac": "aacparse ! rtpmp4gpay name=pay1 pt=97",
    "opus": "rtpopuspay name=pay1 pt=97",
    "pcm_mulaw": "rtppcmupay name=pay1",
    "pcm_alaw": "rtppcmapay name=pay1",
}


def _probe_codecs(path: str) -> dict[str, str]:
    """{"video": "h264", "audio": "aac"} for the first stream of each type (ffprobe)."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        raise SystemExit("ffprobe not found (apt install ffmpeg)")
    out = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "stream=codec_type,codec_name", "-of", "csv=p=0", path],
        check=True, capture_output=True, text=True,
    ).stdout
    codecs: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.strip().split(",")
        if len(parts) == 2:
            name, kind = parts
            codecs.setdefault(kind, name)
    return codecs


def launch_line(source: str, width: int, height: int) -> str:
    """The gst-launch description of one mount's media (payloaders named pay0, pay1)."""
    if source.startswith("file:"):
        path = source[len("file:"):]
        if not Path(path).is_file():
            raise SystemExit(f"no such file: {path}")
        codecs = _probe_codecs(path)
        video = codecs.get("video")
        if video not in RTP_VIDEO_PAYLOADERS:
            raise SystemExit(f"{path}: video must be one of {sorted(RTP_VIDEO_PAYLOADERS)} "
                             f"(served without re-encoding), found {video}")
        line = f'( filesrc location="{path}" ! qtdemux name=d d.video_0 ! queue ! {RTP_VIDEO_PAYLOADERS[video]} '
        audio = codecs.get("audio")
        if audio is not None:
            if audio not in RTP_AUDIO_PAYLOADERS:
                raise SystemExit(f"{path}: audio must be one of {sorted(RTP_AUDIO_PAYLOADERS)}, found {audio}")
            line += f"d.audio_0 ! queue ! {RTP_AUDIO_PAYLOADERS[audio]} "
        return line + ")"
    if source in ("test", "test-noaudio"):
        line = (
            f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate=25/1 "
            "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 "
            "! rtph264pay name=pay0 pt=96 config-interval=1 "
        )
        if source == "test":
            line += (
                "audiotestsrc is-live=true wave=pink-noise volume=0.3 ! audio/x-raw,rate=48000,channels=2 "
                "! audioconvert ! avenc_aac ! aacparse ! rtpmp4gpay name=pay1 pt=97 "
            )
        return line + ")"
    raise SystemExit(f"unknown source {source!r}: use file:PATH, test or test-noaudio")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve files or a synthetic source over RTSP on 127.0.0.1.")
    parser.add_argument("--mount", action="append", required=True, metavar="NAME=SOURCE",
                        help="e.g. cam1=file:/tmp/clip.mp4, cam2=test, cam3=test-noaudio")
    parser.add_argument("--port", default="0", help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=180)
    args = parser.parse_args(argv)

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(args.port)
    mount_points = server.get_mount_points()
    for spec in args.mount:
        name, _, source = spec.partition("=")
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_line(source, args.width, args.height))
        factory.set_shared(False)  # every client gets its own pipeline, starting at t=0
        mount_points.add_factory("/" + name.strip("/"), factory)
    if server.attach(None) == 0:
        print("could not bind the RTSP server", file=sys.stderr)
        return 1
    print(f"{READY_PREFIX}{server.get_bound_port()}", flush=True)

    loop = GLib.MainLoop()
    import signal

    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
