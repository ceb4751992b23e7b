"""Sources: decode a camera (and optionally a microphone) in worker threads.

A source runs one worker thread that opens the input, demuxes and decodes it, and hands
small records to the asyncio loop through a bounded `SourceQueue`:

    SourceOpened(info) -> VideoItem / AudioItem ... -> SourceEnded(reason)

Nothing here blocks the event loop. What is decoded, and what is not:

* Audio: every frame is decoded and converted to mono float32 at the stream's first sample
  rate (av.AudioResampler), whatever the codec, rate, channel count or sample format. The
  aligner resamples each one-second window to 16 kHz with `prepare_audio`.
* Video: every frame is decoded (H.264 frames depend on each other) but none is converted to
  RGB here. A `VideoItem` carries the decoded frame, and only the frame the aligner picks for
  a window is converted (`DecodedFrame.to_rgb`), once per second instead of 25 times.
  Measured on this 2-core machine (20 s 1080p25 H.264 clip, PyAV 18, slice threads): full
  decode with RGB for every frame 7.9-12.5 % of one core per camera, full decode with RGB for
  one frame per second 4.7-9.4 %, keyframe-only decode 0.4-0.7 %. Keyframe-only is offered
  (`video_decode="keyframes"`) but is not the default: it only gives one frame per GOP, and
  IP cameras commonly send a keyframe every 2-4 s, so windows would be paired with frames
  seconds away from their centre.

Timestamps are the stream's presentation times in seconds (they restart near 0 on every
reconnect); `arrival` is the wall-clock time (time.time()) at which the data reached us.
The aligner turns both into wall-clock windows.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

VideoDecode = Literal["all", "keyframes"]

# How long the worker waits for room in a full queue before dropping an item: a live reader
# that stops reading makes the server drop us, so the source never blocks for long.
PUT_WAIT_S = 0.5


# --------------------------------------------------------------------------------------
# records handed to the loop


@dataclass(frozen=True)
class StreamInfo:
    """What the opened input carries."""

    url: str  # redacted, safe to log
    has_video: bool
    has_audio: bool
    video_codec: str | None = None
    video_size: tuple[int, int] | None = None  # (width, height)
    frame_rate: float | None = None
    audio_codec: str | None = None
    audio_rate: int | None = None
    audio_channels: int | None = None
    # True when audio and video timestamps come from one clock (one RTSP session, one file);
    # False when the sound comes from a separate device (a microphone paired with a camera).
    shared_clock: bool = True
    # Periods (seconds) after which this input's timestamps wrap around (32/33-bit counters).
    wrap_periods_s: tuple[float, ...] = ()


class DecodedFrame:
    """A decoded video frame, converted to RGB only if someone asks for it."""

    __slots__ = ("_frame",)

    def __init__(self, frame: Any) -> None:
        self._frame = frame  # av.VideoFrame (keeps its decoder buffer alive, nothing more)

    @property
    def size(self) -> tuple[int, int]:
        return (int(self._frame.width), int(self._frame.height))

    def to_rgb(self) -> np.ndarray:
        """H x W x 3 uint8 RGB at the frame's native size (~1-2 ms at 1080p)."""
        return self._frame.to_ndarray(format="rgb24")


class ArrayFrame:
    """An already-RGB frame (tests, synthetic inputs) with the same interface."""

    __slots__ = ("_rgb",)

    def __init__(self, rgb: np.ndarray) -> None:
        self._rgb = rgb

    @property
    def size(self) -> tuple[int, int]:
        return (int(self._rgb.shape[1]), int(self._rgb.shape[0]))

    def to_rgb(self) -> np.ndarray:
        return self._rgb


@dataclass(frozen=True)
class SourceOpened:
    info: StreamInfo


@dataclass(frozen=True)
class VideoItem:
    pts: float  # presentation time, seconds
    arrival: float  # time.time() when decoded
    frame: DecodedFrame | ArrayFrame


@dataclass(frozen=True)
class AudioItem:
    pts: float
    arrival: float
    samples: np.ndarray  # (n,) float32 mono
    sample_rate: int


@dataclass(frozen=True)
class SourceEnded:
    """The input is gone: `reason` says why (shown in the camera's status)."""

    reason: str
    error: bool = True  # False for a clean end (a file that does not loop)


SourceItem = SourceOpened | VideoItem | AudioItem | SourceEnded


# --------------------------------------------------------------------------------------
# thread -> loop hand-off


class SourceQueue:
    """A bounded queue written by worker threads and read by the asyncio loop.

    Capacity is a semaphore the writer takes before scheduling `put_nowait` on the loop and
    the reader gives back after `get`, so media never exceeds `maxsize` items and the loop
    never waits on a lock. A writer that finds the queue full for PUT_WAIT_S drops the media
    item and counts it (`dropped`), and drops at once while it stays full. The two control
    records of a connection (opened, ended) take no room and are never dropped: the daemon
    must always learn that a source ended.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int = 256) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[tuple[SourceItem, bool]] = asyncio.Queue()
        self._room = threading.BoundedSemaphore(maxsize)
        self._congested = False
        self.dropped = 0

    def put(self, item: SourceItem, stop: threading.Event | None = None) -> bool:
        """From a worker thread: enqueue, or drop a media item after PUT_WAIT_S."""
        takes_room = not isinstance(item, (SourceOpened, SourceEnded))
        if takes_room:
            # Wait once for room; while the queue stays full, drop at once, so the worker
            # keeps pace with the stream instead of waiting PUT_WAIT_S per item.
            if not self._room.acquire(timeout=0 if self._congested else PUT_WAIT_S):
                self._congested = True
                self.dropped += 1
                return False
            self._congested = False
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (item, takes_room))
        except RuntimeError:  # loop closed: the daemon is gone
            if takes_room:
                self._room.release()
            return False
        return True

    def interrupt(self, item: SourceEnded) -> None:
        """From the loop: make the reader's next `get` return `item` (stop, watchdog)."""
        self._queue.put_nowait((item, False))

    async def get(self) -> SourceItem:
        item, took_room = await self._queue.get()
        if took_room:
            self._room.release()
        return item

    def qsize(self) -> int:
        return self._queue.qsize()


# --------------------------------------------------------------------------------------
# sources


class Source(Protocol):
    def start(self, queue: SourceQueue) -> None: ...
    def stop(self) -> None: ...


class WorkerThreadSource:
    """Runs `_run` in a daemon thread; `stop()` asks it to end and never blocks."""

    thread_name = "source"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: SourceQueue | None = None

    def start(self, queue: SourceQueue) -> None:
        self._queue = queue
        self._thread = threading.Thread(target=self._guarded_run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to finish (tests); True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _emit(self, item: SourceItem) -> bool:
        assert self._queue is not None
        if isinstance(item, SourceEnded):
            self._ended = True
        return self._queue.put(item, self._stop)

    def _guarded_run(self) -> None:
        self._ended = False
        try:
            self._run()
        except Exception as exc:  # the thread must always say that it ended
            if not self.stopping:
                self._emit(SourceEnded(describe_error(exc)))
        if not self._ended:
            self._emit(SourceEnded("stopped", error=False))

    def _run(self) -> None:  # pragma: no cover - each source defines it
        raise NotImplementedError


class UnusableInputError(RuntimeError):
    """The input opened but cannot be counted (e.g. it has no video); the message says why."""


def describe_error(exc: BaseException) -> str:
    """A short, credential-free reason for a status message."""
    import av

    if isinstance(exc, UnusableInputError):
        return str(exc)
    if isinstance(exc, TimeoutError) or isinstance(exc, av.error.ExitError):
        return "timed out"
    if isinstance(exc, av.error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, av.error.HTTPNotFoundError):
        return "not found (404)"
    if isinstance(exc, (av.error.HTTPUnauthorizedError, av.error.HTTPForbiddenError)):
        return "not authorised"
    if isinstance(exc, av.error.FileNotFoundError):
        return "no such file"
    if isinstance(exc, av.error.InvalidDataError):
        return "not a playable stream (corrupt, truncated or not audio/video): invalid data"
    if isinstance(exc, av.FFmpegError):
        # FFmpeg messages name the error, not the URL (filename is a separate attribute).
        return f"{type(exc).__name__}: {exc.strerror or exc}".rstrip()
    return f"{type(exc).__name__}: {exc}"


def _is_network_url(url: str) -> bool:
    return "://" in url and not url.startswith("file:")


class AVSource(WorkerThreadSource):
    """RTSP, files and anything else `av.open` opens.

    * RTSP: `rtsp_transport` (tcp by default) and a socket timeout; every input also gets
      PyAV's open/read timeout, so a frozen server raises TimeoutError instead of hanging.
    * The end of a live stream is a disconnect (`SourceEnded(error=True)`): FFmpeg's demuxer
      simply stops yielding packets when the server goes away.
    * Local files are paced at real time (like a camera) unless `realtime=False`, and
      replayed from the start when `loop=True`, with timestamps that keep increasing.
    * `with_audio=False` ignores the input's audio (audio off, or a paired microphone).
    """

    thread_name = "source-av"

    def __init__(
        self,
        url: str,
        *,
        transport: Literal["tcp", "udp"] = "tcp",
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        loop: bool = False,
        realtime: bool | None = None,
        with_audio: bool = True,
        video_decode: VideoDecode = "all",
        options: dict[str, str] | None = None,
        label: str | None = None,
    ) -> None:
        super().__init__()
        from avcc_stream.security import redact_url

        self.url = url
        self.label = label or redact_url(url)
        self.transport = transport
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.loop = loop
        self.realtime = (not _is_network_url(url)) if realtime is None else realtime
        self.with_audio = with_audio
        self.video_decode = video_decode
        self.extra_options = dict(options or {})
        self.frames_decoded = 0

    def open_options(self) -> dict[str, str]:
        options: dict[str, str] = {}
        if self.url.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = self.transport
            # FFmpeg >= 5 names the RTSP socket I/O timeout `timeout` (microseconds);
            # the old `stimeout` is silently ignored by the FFmpeg 8 inside PyAV 18.
            options["timeout"] = str(int(self.read_timeout_s * 1_000_000))
        options.update(self.extra_options)
        return options

    def _run(self) -> None:
        import av

        started = time.monotonic()
        try:
            container = av.open(
                self.url, options=self.open_options(), timeout=(self.open_timeout_s, self.read_timeout_s)
            )
        except av.error.InvalidDataError as exc:
            # An open that its timeout interrupts while probing the first packets (a server slow
            # to start its encoder) reports "invalid data": a slow server, not a corrupt stream.
            if time.monotonic() - started >= 0.95 * self.open_timeout_s:
                raise TimeoutError(f"no playable media within {self.open_timeout_s:g} s") from exc
            raise
        try:
            self._read(container)
        finally:
            container.close()

    def _read(self, container: Any) -> None:
        import av

        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if (self.with_audio and container.streams.audio) else None
        if video is None:
            kinds = ", ".join(sorted({stream.type for stream in container.streams})) or "no streams"
            raise UnusableInputError(f"no video stream (the input has {kinds}): a camera needs video")
        video.thread_type = "SLICE"  # measured: less CPU than frame threads, no added delay
        if self.video_decode == "keyframes":
            video.codec_context.skip_frame = "NONKEY"
        info = StreamInfo(
            url=self.label,
            has_video=True,
            has_audio=audio is not None,
            video_codec=video.codec_context.name,
            video_size=(video.codec_context.width, video.codec_context.height),
            frame_rate=float(video.average_rate) if video.average_rate else None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            audio_rate=audio.codec_context.sample_rate if audio is not None else None,
            audio_channels=audio.codec_context.channels if audio is not None else None,
            shared_clock=True,
            wrap_periods_s=_wrap_periods(video, audio),
        )
        self._emit(SourceOpened(info))
        to_mono = MonoConverter()
        streams = [s for s in (video, audio) if s is not None]
        pacer = RealtimePacer() if self.realtime else None
        offset = 0.0  # added to timestamps on each replay of a looping file
        while True:
            last_end = 0.0
            for packet in container.demux(streams):
                if self.stopping:
                    return
                for frame in packet.decode():
                    if frame.time is None:
                        continue
                    pts = float(frame.time) + offset
                    if pacer is not None:
                        pacer.wait_until(pts, self._stop)
                        if self.stopping:
                            return
                    arrival = time.time()
                    if packet.stream is video:
                        self.frames_decoded += 1
                        last_end = max(last_end, pts + _frame_duration(video))
                        self._emit(VideoItem(pts, arrival, DecodedFrame(frame)))
                    else:
                        samples, rate = to_mono(frame)
                        last_end = max(last_end, pts + samples.size / rate)
                        self._emit(AudioItem(pts, arrival, samples, rate))
            if self.stopping:
                return
            if not self.loop:
                if _is_network_url(self.url):
                    self._emit(SourceEnded("stream ended (server closed or went away)"))
                else:
                    self._emit(SourceEnded("end of file", error=False))
                return
            container.seek(0)
            for stream in streams:
                stream.codec_context.flush_buffers()
            offset = last_end


def _frame_duration(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return 1.0 / float(rate) if rate else 0.04


def _wrap_periods(*streams: Any) -> tuple[float, ...]:
    """Where 32-bit (RTP) and 33-bit (MPEG-TS) timestamp counters of these streams wrap."""
    periods = set()
    for stream in streams:
        if stream is not None and stream.time_base:
            for bits in (32, 33):
                periods.add(float((1 << bits) * stream.time_base))
    return tuple(sorted(periods))


class MonoConverter:
    """Any decoded audio frame -> (mono float32 samples, rate), at the first frame's rate.

    av.AudioResampler handles every sample format (planar/packed, int/float) and channel
    layout; keeping one output rate means a stream that changes rate mid-way still gives
    the aligner one continuous sample clock.
    """

    def __init__(self) -> None:
        self._resampler: Any = None
        self.rate: int | None = None

    def __call__(self, frame: Any) -> tuple[np.ndarray, int]:
        import av

        if self._resampler is None:
            self.rate = int(frame.sample_rate)
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
        chunks = [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return samples.astype(np.float32, copy=False), int(self.rate)


class RealtimePacer:
    """Sleeps so that timestamps are released at the pace of a live camera."""

    def __init__(self) -> None:
        self._origin: tuple[float, float] | None = None  # (monotonic, pts)

    def wait_until(self, pts: float, stop: threading.Event) -> None:
        now = time.monotonic()
        if self._origin is None:
            self._origin = (now, pts)
            return
        delay = self._origin[0] + (pts - self._origin[1]) - now
        if delay > 0:
            stop.wait(delay)


class MicrophoneSource(WorkerThreadSource):
    """A local sound input (sounddevice/PortAudio) that supplies the audio of a camera.

    It emits AudioItems only; `PairedSource` merges it with a video-only camera. Timestamps
    count samples from 0 (a gap-free sample clock); `arrival` is the wall-clock capture time
    of each block's first sample (PortAudio's ADC time mapped to time.time()).
    """

    thread_name = "source-mic"

    def __init__(self, device: str | int | None, *, sample_rate: int = 16_000, channels: int = 1, block_s: float = 0.1) -> None:
        super().__init__()
        self.device = device
        self.sample_rate = sample_rate
        self.channels = channels
        self.block_s = block_s
        self.overflows = 0

    def _run(self) -> None:
        import sounddevice as sd

        samples_seen = 0
        blocks: list[tuple[np.ndarray, float]] = []
        ready = threading.Condition()

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            if status.input_overflow:
                self.overflows += 1
            # Map PortAudio's stream clock to wall-clock time for this block's first sample.
            capture = time.time() - max(0.0, time_info.currentTime - time_info.inputBufferAdcTime)
            with ready:
                blocks.append((indata.mean(axis=1).astype(np.float32), capture))
                ready.notify()

        stream = sd.InputStream(
            device=self.device, samplerate=self.sample_rate, channels=self.channels,
            dtype="float32", blocksize=int(self.sample_rate * self.block_s), callback=callback,
        )
        with stream:
            self._emit(SourceOpened(StreamInfo(
                url=f"microphone:{self.device}", has_video=False, has_audio=True,
                audio_codec="pcm", audio_rate=int(stream.samplerate), audio_channels=self.channels,
                shared_clock=False,
            )))
            while not self.stopping:
                with ready:
                    if not blocks:
                        ready.wait(timeout=1.0)
                    pending, blocks[:] = list(blocks), []
                if not pending and not stream.active:
                    raise RuntimeError("the microphone stream stopped")
                for samples, capture in pending:
                    self._emit(AudioItem(samples_seen / self.sample_rate, capture, samples, self.sample_rate))
                    samples_seen += samples.size


class PairedSource:
    """A video-only camera with its sound from a microphone: one source to the daemon.

    Both workers write into one queue; the first `SourceOpened` is replaced by a combined
    one (has_audio, shared_clock=False) and the session ends when either side ends.
    """

    def __init__(self, video: AVSource, audio: MicrophoneSource) -> None:
        self.video = video
        self.audio = audio
        self._outer: SourceQueue | None = None

    def start(self, queue: SourceQueue) -> None:
        self._outer = queue
        self.video.with_audio = False
        relay = _PairingRelay(queue, self)
        self.video.start(relay)  # type: ignore[arg-type]
        self.audio.start(relay)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.video.stop()
        self.audio.stop()


class _PairingRelay:
    """Merges the two workers' records: one SourceOpened once both opened, one SourceEnded."""

    def __init__(self, queue: SourceQueue, paired: PairedSource) -> None:
        self._queue = queue
        self._paired = paired
        self._lock = threading.Lock()
        self._opened: dict[bool, StreamInfo] = {}
        self._ended = False

    def put(self, item: SourceItem, stop: threading.Event | None = None) -> bool:
        with self._lock:
            if self._ended:
                return False
            if isinstance(item, SourceOpened):
                self._opened[item.info.has_video] = item.info
                if len(self._opened) < 2:
                    return True
                video, audio = self._opened[True], self._opened[False]
                item = SourceOpened(StreamInfo(
                    url=video.url, has_video=True, has_audio=True, video_codec=video.video_codec,
                    video_size=video.video_size, frame_rate=video.frame_rate, audio_codec=audio.audio_codec,
                    audio_rate=audio.audio_rate, audio_channels=audio.audio_channels, shared_clock=False,
                    wrap_periods_s=video.wrap_periods_s,
                ))
            elif isinstance(item, SourceEnded):
                self._ended = True
                self._paired.stop()
            elif len(self._opened) < 2:
                return True  # media before both sides are open is dropped: no window can use it
        return self._queue.put(item, stop)


def build_source(
    *,
    url: str | None = None,
    file: str | os.PathLike[str] | None = None,
    loop: bool = False,
    transport: Literal["tcp", "udp"] = "tcp",
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 5.0,
    audio: bool = True,
    microphone: str | int | None = None,
    video_decode: VideoDecode = "all",
    label: str | None = None,
) -> Source:
    """The source for one camera's settings (plain parameters, so tests need no config)."""
    target = url if url is not None else os.fspath(file)  # type: ignore[arg-type]
    video = AVSource(
        target, transport=transport, open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s,
        loop=loop, with_audio=audio and microphone is None, video_decode=video_decode, label=label,
    )
    if microphone is not None and audio:
        return PairedSource(video, MicrophoneSource(microphone))
    return video


SourceFactory = Callable[[], Source]
