"""A synthetic camera clip: one venue over time, people arriving, standing, walking off.

The crowd follows a random occupancy curve (steady, a surge, filling up, emptying, waves):
people walk in from the frame's edges or its far end to a spot (scattered or in groups),
stand there a while, and walk out; some only pass through. Every frame is drawn with the
still generator's renderer, so the count of each frame is exactly the heads an annotator
would mark in it. The sound is the crowd of each second (everyone in the scene, in view or
just outside it) over the venue's ambient sound, continuous across seconds.

Output: FILE (H.264 + AAC in MP4, keyframe every second) and FILE.counts.json:
    {"fps": 25, "seconds": T, ..., "counts": [{"second": s, "count": n, "mean": .., "min": ..,
     "max": .., "audible": .., "heads": [[x, y], ...]}, ...]}
where `count` and `heads` are those of the frame in the middle of second s (frame
s * fps + fps // 2) and mean/min/max run over all frames of that second.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np

from avcc_stream.data.synth.audio import (
    WORK_RATE, ambient_sound, crowd_sound, finish, reverberate, sample_audio_scene,
)
from avcc_stream.data.synth.people import Crowd, draw_scene, sample_appearance, sample_positions
from avcc_stream.data.synth.raster import Canvas
from avcc_stream.data.synth.sample import GENERATOR_VERSION
from avcc_stream.data.synth.scene import SceneSpec, render_background, sample_objects, sample_scene

AUDIO_FRAME = 1024  # AAC encodes 1024 samples per frame
CROSSFADE_SECONDS = 0.05
STEP_RATE_HZ = 1.8  # steps per second of a walking person (animates the legs)


def counts_path(video: str | Path) -> Path:
    """Where the per-second ground truth of `video` lives: FILE.counts.json."""
    return Path(f"{video}.counts.json")


@dataclass
class Timeline:
    """Everyone who is in the scene at some time, with when and where they walk."""

    appearance: Crowd  # positions here are the standing spots
    t_in: np.ndarray  # starts walking in
    t_arrive: np.ndarray  # reaches the spot
    t_leave: np.ndarray  # starts walking out
    t_out: np.ndarray  # gone
    start: np.ndarray  # n x 2 (lateral, depth) metres where they come from
    spot: np.ndarray  # n x 2 where they stand
    end: np.ndarray  # n x 2 where they go

    def at(self, t: float) -> tuple[Crowd, np.ndarray]:
        """The people in the scene at time t (positions, walking or not) and their indices."""
        active = np.flatnonzero((self.t_in <= t) & (t < self.t_out))
        crowd = self.appearance.take(active)
        t_in, t_arrive = self.t_in[active], self.t_arrive[active]
        t_leave, t_out = self.t_leave[active], self.t_out[active]
        walking_in = t < t_arrive
        walking_out = t >= t_leave
        into = np.clip((t - t_in) / np.maximum(t_arrive - t_in, 1e-6), 0, 1)[:, None]
        out_of = np.clip((t - t_leave) / np.maximum(t_out - t_leave, 1e-6), 0, 1)[:, None]
        spot = self.spot[active]
        position = np.where(walking_in[:, None], self.start[active] + (spot - self.start[active]) * into, spot)
        position = np.where(walking_out[:, None], spot + (self.end[active] - spot) * out_of, position)
        moving = walking_in | walking_out
        phase = crowd.phase + np.where(moving, 2 * math.pi * STEP_RATE_HZ / 2 * t, 0.0)
        crowd = crowd.moved(position[:, 0], position[:, 1], phase)
        crowd.moving = moving
        return crowd, active


def occupancy_curve(rng: np.random.Generator, seconds: float) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    """How many people the scene should hold over time."""
    base = float(np.exp(rng.uniform(np.log(3), np.log(120))))
    shape = str(rng.choice(["steady", "surge", "filling", "emptying", "waves"], p=[0.15, 0.3, 0.2, 0.15, 0.2]))
    peak_at = rng.uniform(0.3, 0.7) * seconds
    width = rng.uniform(0.1, 0.3) * seconds
    gain = rng.uniform(1.0, 3.0)
    period = rng.uniform(0.3, 0.8) * seconds

    def curve(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if shape == "surge":
            return base * (1 + gain * np.exp(-(((t - peak_at) / width) ** 2)))
        if shape == "filling":
            return base * (0.3 + (1 + gain) * np.clip(t / seconds, 0, 1))
        if shape == "emptying":
            return base * (0.3 + (1 + gain) * np.clip(1 - t / seconds, 0, 1))
        if shape == "waves":
            return base * (1 + 0.5 * gain * (1 + np.sin(2 * np.pi * t / period)))
        return np.full_like(t, base)

    return curve, {"shape": shape, "base": round(base, 2), "gain": round(float(gain), 3)}


def plan_timeline(rng: np.random.Generator, spec: SceneSpec, seconds: float) -> tuple[Timeline, dict[str, Any]]:
    """Arrivals and departures that make the number of people follow the occupancy curve.

    Everyone comes from a pool drawn up front (standing spots in one layout of groups and
    scattered people, with the walks to and from them), so the planner knows how long each
    person stays in view, walking included, and can keep the head count on the curve.
    """
    curve, curve_info = occupancy_curve(rng, seconds)
    step = 0.5
    times = np.arange(0.0, seconds + step, step)
    peak = float(curve(times).max())
    mean_dwell = rng.uniform(6.0, 40.0)
    pool = int(peak * (2.0 + seconds / mean_dwell) * 1.5) + 20
    lateral, depth, layout = sample_positions(rng, spec, pool)
    order = rng.permutation(len(depth))
    spot = np.stack([lateral, depth], axis=1)[order]
    start, walk_in = _edge_points(rng, spec, spot)
    end, walk_out = _edge_points(rng, spec, spot)
    passing = rng.uniform(0, 1, len(spot)) < 0.25  # passers-by cross without standing
    dwell = np.where(passing, 0.0, rng.exponential(mean_dwell, len(spot)) + 1.0)

    t_in = np.full(len(spot), np.inf)
    t_leave = np.full(len(spot), np.inf)
    used = 0
    for t in times:
        target = float(curve(np.array([t]))[0])
        present = np.flatnonzero((t_in[:used] <= t) & (t_leave[:used] + walk_out[:used] > t))
        if t == 0.0:  # people already standing (or arriving) when the clip starts
            chosen = np.arange(used, min(used + int(rng.poisson(target)), len(spot)))
            # arrived a while ago (or, a few of them, still on their way in)
            start_times = -(walk_in[chosen] * rng.uniform(0.6, 1.0, len(chosen))
                            + dwell[chosen] * rng.uniform(0.0, 0.8, len(chosen)))
        else:  # newcomers: to reach the curve, and to replace those walking off
            stay = float(np.mean(walk_in + dwell + walk_out))
            expected = max(target - len(present), 0.0) * 0.4 + len(present) * step / stay
            count = int(rng.poisson(expected))
            start_times = t - rng.uniform(0.0, step, min(count, len(spot) - used))
        chosen = np.arange(used, used + len(start_times))
        t_in[chosen] = start_times
        t_leave[chosen] = start_times + walk_in[chosen] + dwell[chosen]
        used += len(chosen)
        excess = len(present) - target
        if t > 0 and excess > 1:  # the curve falls: some of those standing leave now
            standing = present[t_leave[present] > t]
            going = standing[rng.uniform(0, 1, len(standing)) < 0.3 * min(excess / max(len(standing), 1), 1.0)]
            t_leave[going] = np.maximum(np.minimum(t_leave[going], t + rng.uniform(0.0, step, len(going))),
                                        t_in[going] + walk_in[going])

    keep = np.arange(used)
    appearance = Crowd(lateral=spot[keep, 0], depth=spot[keep, 1], phase=rng.uniform(0, 2 * np.pi, used),
                       moving=np.zeros(used, dtype=bool), extras=layout, **sample_appearance(rng, used))
    t_arrive = t_in[keep] + walk_in[keep]
    timeline = Timeline(appearance, t_in[keep], t_arrive, t_leave[keep], t_leave[keep] + walk_out[keep],
                        start[keep], spot[keep], end[keep])
    return timeline, {"occupancy": curve_info, "people": used, "mean_dwell_s": round(float(mean_dwell), 2),
                      "layout": layout}


def _edge_points(rng: np.random.Generator, spec: SceneSpec, spot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each person enters or leaves (just outside the view) and the walk's duration (s).

    Mostly the nearest way out (left, right, the far end, or below the frame), sometimes any.
    """
    cam = spec.camera
    near, far = spec.people_depth
    n = len(spot)
    depth = np.stack([spot[:, 1], spot[:, 1], np.full(n, far * 1.05), np.full(n, near * 0.85)], axis=1)
    column = np.stack([np.full(n, -0.12 * cam.width), np.full(n, 1.12 * cam.width),
                       cam.column(spot[:, 0], spot[:, 1]), cam.column(spot[:, 0], spot[:, 1])], axis=1)
    candidates = np.stack([cam.lateral(column, depth), depth], axis=2)  # n x 4 x 2
    distance = np.linalg.norm(candidates - spot[:, None, :], axis=2)
    side = np.where(rng.uniform(0, 1, n) < 0.7, distance.argmin(axis=1), rng.integers(0, 4, n))
    rows = np.arange(n)
    speed = rng.uniform(0.9, 1.7, n)
    return candidates[rows, side], distance[rows, side] / speed + 0.1


def render_frame(spec: SceneSpec, background: np.ndarray, light: np.ndarray, objects: list, crowd: Crowd
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One frame as H x W x 3 uint8 RGB, and the annotated head points (N, 2)."""
    canvas = Canvas(background)
    heads, annotated, _ = draw_scene(canvas, spec, objects, crowd)
    canvas.rgb *= light
    image = (np.clip(canvas.rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return image, heads[annotated]


def crowd_track(timeline: Timeline, sound: Any, rng: np.random.Generator, seconds: int,
                offscreen: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The crowd's sound, one block per second overlapped by a short crossfade."""
    fade = int(CROSSFADE_SECONDS * WORK_RATE)
    length = seconds * WORK_RATE
    track = np.zeros((sound.channels, length + fade), dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    audible = []
    for s in range(seconds):
        crowd, _ = timeline.at(s + 0.5)
        people = len(crowd) + int(offscreen[s])
        audible.append(people)
        block = crowd_sound(people, int(crowd.moving.sum()), sound, rng, seconds=1.0 + CROSSFADE_SECONDS)
        if s > 0:
            block[:, :fade] *= ramp
        block[:, -fade:] *= ramp[::-1]
        track[:, s * WORK_RATE : s * WORK_RATE + block.shape[1]] += block
    return track[:, :length], audible


def write_video(
    path: str | Path,
    seconds: int,
    seed: int,
    size: tuple[int, int] = (1024, 576),
    fps: int = 25,
    audio: bool = True,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Render, encode and write the clip and its counts file; returns the counts document."""
    import av  # only this command needs PyAV

    if seconds < 1:
        raise ValueError(f"seconds must be at least 1, got {seconds}")
    if fps < 1:
        raise ValueError(f"fps must be at least 1, got {fps}")
    width, height = size
    if width % 2 or height % 2 or width < 32 or height < 32:
        raise ValueError(f"size must be even and at least 32x32 for H.264 4:2:0, got {width}x{height}")
    scene_rng, background_rng, crowd_rng, audio_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    spec = sample_scene(scene_rng, width, height)
    objects = sample_objects(scene_rng, spec)
    background = render_background(spec, background_rng)
    light = spec.lighting.light_map(width, height)
    timeline, plan = plan_timeline(crowd_rng, spec, float(seconds))

    sound = sample_audio_scene(audio_rng, spec.indoor)
    if sound.sample_rate not in (48_000, 44_100, 32_000, 16_000):
        sound.sample_rate = 48_000  # rates every AAC decoder handles
    samples = None
    audible: list[int] = []
    if audio:
        offscreen = audio_rng.poisson(sound.offscreen_share * max(plan["occupancy"]["base"], 1.0), seconds)
        track, audible = crowd_track(timeline, sound, audio_rng, seconds, offscreen)
        mix = reverberate(track, sound, audio_rng) + ambient_sound(sound, float(seconds))
        samples = finish(mix, sound, audio_rng)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    per_frame: list[int] = []
    mid_heads: dict[int, np.ndarray] = {}
    with av.open(str(path), "w", format="mp4") as container:
        video_stream = container.add_stream("libx264", rate=fps)
        video_stream.width, video_stream.height = width, height
        video_stream.pix_fmt = "yuv420p"
        video_stream.codec_context.gop_size = fps
        video_stream.options = {"preset": "veryfast", "crf": "23",
                                "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0"}
        audio_stream = None
        layout = "mono" if sound.channels == 1 else "stereo"
        if samples is not None:
            audio_stream = container.add_stream("aac", rate=sound.sample_rate, layout=layout)
        audio_sent = 0
        for frame_index in range(seconds * fps):
            t = frame_index / fps
            crowd, _ = timeline.at(t)
            image, heads = render_frame(spec, background, light, objects, crowd)
            per_frame.append(len(heads))
            if frame_index % fps == fps // 2:
                mid_heads[frame_index // fps] = heads
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = frame_index
            frame.time_base = Fraction(1, fps)
            container.mux(video_stream.encode(frame))
            if audio_stream is not None:  # keep audio up with video so the muxer interleaves
                due = min(int((frame_index + 1) / fps * sound.sample_rate), samples.shape[1])
                while audio_sent + AUDIO_FRAME <= due or (frame_index == seconds * fps - 1 and audio_sent < due):
                    chunk = samples[:, audio_sent : audio_sent + AUDIO_FRAME]
                    audio_frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=layout)
                    audio_frame.sample_rate = sound.sample_rate
                    audio_frame.pts = audio_sent
                    audio_frame.time_base = Fraction(1, sound.sample_rate)
                    container.mux(audio_stream.encode(audio_frame))
                    audio_sent += chunk.shape[1]
            if progress:
                progress(1)
        container.mux(video_stream.encode(None))
        if audio_stream is not None:
            container.mux(audio_stream.encode(None))

    frames = np.asarray(per_frame).reshape(seconds, fps)
    document = {
        "video": path.name,
        "generator": "avcc-stream synth-video",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "fps": fps,
        "seconds": seconds,
        "size": [width, height],
        "audio": samples is not None,
        "audio_sample_rate": sound.sample_rate if samples is not None else None,
        "audio_channels": sound.channels if samples is not None else None,
        "definition": "count and heads: annotated heads in frame s*fps + fps//2 (the middle of "
                      "second s); mean/min/max over the frames of second s; audible: people heard",
        "counts": [
            {"second": s, "count": int(frames[s, fps // 2]), "mean": round(float(frames[s].mean()), 3),
             "min": int(frames[s].min()), "max": int(frames[s].max()),
             **({"audible": int(audible[s])} if audible else {}),
             "heads": np.round(mid_heads[s], 1).tolist()}
            for s in range(seconds)
        ],
        "scene": spec.params(),
        "timeline": plan,
        "objects": [obj.params() for obj in objects],
        "audio_params": sound.params() if samples is not None else None,
    }
    counts_path(path).write_text(json.dumps(document))
    return document
