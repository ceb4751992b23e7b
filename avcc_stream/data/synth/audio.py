"""The sound of a venue: a crowd whose texture follows its size, over sounds that do not.

Crowd (depends on the number of people who can be heard, in and out of the frame):
- talkers: Poisson(share * S * (1 - exp(-N / S))) people speak at once: linear for small
  crowds, saturating at large ones (people only talk to their neighbours). Each talker is a
  pulse train at its own pitch and intonation, shaped by vowel formants that change per
  syllable, gated by a syllabic envelope with pauses, plus noisy consonant onsets. The loudest
  MAX_TALKERS are synthesised one by one; the rest merge into a speech-shaped babble bed whose
  modulation flattens as it grows (the "texture" of a big crowd). Voices get louder with the
  crowd (Lombard effect), so loudness grows sub-linearly: power ~ talkers * effort^2.
- footsteps: short filtered transients from the people who walk, at random times, also with
  a saturating rate; applause in some scenes.
- the room: a reverberant tail (RT60 per scene).
Independent of the crowd, drawn per scene: ambient sources (HVAC hum and fan, traffic
rumble and passing cars, wind gusts, music with a beat, a PA announcer, birds), microphone gain,
sometimes automatic gain control, a microphone's band limits and self-noise. So loudness
alone is not the count, while the texture still carries it.

Everything is synthesised at 16 kHz (what the model hears) and resampled to the scene's native
rate (16-48 kHz, mono or stereo) so that training exercises the resampling path.
Speech is made in the STFT domain: one STFT of all talkers' sources at once, multiplied by
per-talker, per-frame formant envelopes, summed, one inverse STFT. No per-sample Python loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import scipy.fft
import scipy.signal as signal

WORK_RATE = 16_000
NATIVE_RATES = (48_000, 44_100, 32_000, 22_050, 16_000)
NFFT, HOP = 512, 128
MAX_TALKERS = 24  # individually synthesised voices; the rest form the babble bed
MAX_STEPS = 96  # individually placed footsteps per second; the rest form a shuffle bed
FREQS = np.fft.rfftfreq(NFFT, 1.0 / WORK_RATE).astype(np.float32)

# Vowel formants (F1, F2, F3) of an adult male voice, Hz; scaled per speaker.
VOWELS = np.array([
    [730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410], [300, 870, 2240],
    [660, 1720, 2410], [490, 1350, 1690], [440, 1020, 2240], [390, 1990, 2550],
], dtype=np.float32)
FORMANT_BANDWIDTHS = np.array([90.0, 120.0, 180.0], dtype=np.float32)
FORMANT_GAINS = np.array([1.0, 0.55, 0.3], dtype=np.float32)
AMBIENT_KINDS = ("hum", "traffic", "wind", "music", "announcer", "birds")


def band_limit(x: np.ndarray, low: float | None, high: float | None, order: int = 2) -> np.ndarray:
    """Zero-phase filter along the last axis with a Butterworth magnitude response.

    Done as one FFT multiply: designing an IIR filter per random band costs more than using it.
    """
    n = x.shape[-1]
    freqs = np.fft.rfftfreq(n, 1.0 / WORK_RATE)
    gain = np.ones_like(freqs)
    if low:
        gain /= np.sqrt(1.0 + (low / np.maximum(freqs, 1e-3)) ** (2 * order))
    if high:
        gain /= np.sqrt(1.0 + (freqs / high) ** (2 * order))
    return np.fft.irfft(np.fft.rfft(x, axis=-1) * gain.astype(np.float32), n, axis=-1).astype(np.float32)


def db_to_gain(db: float | np.ndarray) -> float | np.ndarray:
    return 10.0 ** (np.asarray(db) / 20.0)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


@dataclass
class AudioScene:
    """Per-scene sound parameters, independent of how many people there are."""

    sample_rate: int
    channels: int
    talk_share: float  # share of people talking at once in a sparse crowd
    talk_saturation: float  # crowd size around which talking saturates
    walk_saturation: float
    voice_db: float  # RMS of one talker at the reference distance, dBFS
    footstep_db: float
    hard_floor: bool
    applause_db: float | None  # None: no applause in this scene
    rt60: float
    reverb_wet: float
    ambient: list[dict[str, Any]]
    mic_gain_db: float
    agc_target_db: float | None
    band: tuple[float, float]  # microphone high-pass and low-pass corners, Hz
    mic_noise_db: float
    offscreen_share: float  # extra people heard but not seen, as a share of those in view
    extras: dict[str, Any] = field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        def r(v: float) -> float:
            return round(float(v), 3)
        return {
            "sample_rate": self.sample_rate, "channels": self.channels,
            "talk_share": r(self.talk_share), "talk_saturation": r(self.talk_saturation),
            "walk_saturation": r(self.walk_saturation), "voice_db": r(self.voice_db),
            "footstep_db": r(self.footstep_db), "hard_floor": self.hard_floor,
            "applause_db": None if self.applause_db is None else r(self.applause_db),
            "rt60": r(self.rt60), "reverb_wet": r(self.reverb_wet),
            "ambient": [{k: (r(v) if isinstance(v, float) else v) for k, v in a.items()} for a in self.ambient],
            "mic_gain_db": r(self.mic_gain_db),
            "agc_target_db": None if self.agc_target_db is None else r(self.agc_target_db),
            "band_hz": [r(self.band[0]), r(self.band[1])], "mic_noise_db": r(self.mic_noise_db),
            "offscreen_share": r(self.offscreen_share), **self.extras,
        }


def sample_audio_scene(rng: np.random.Generator, indoor: bool) -> AudioScene:
    n_ambient = int(rng.choice([0, 1, 2, 3], p=[0.15, 0.4, 0.3, 0.15]))
    weights = np.array([0.25, 0.1, 0.05, 0.25, 0.2, 0.15] if indoor else [0.1, 0.3, 0.25, 0.15, 0.1, 0.1])
    kinds = rng.choice(AMBIENT_KINDS, size=n_ambient, replace=False, p=weights / weights.sum())
    ambient = [{"kind": str(kind), "level_db": float(rng.uniform(-55.0, -24.0)),
                "seed": int(rng.integers(2**31))} for kind in kinds]
    return AudioScene(
        sample_rate=int(rng.choice(NATIVE_RATES, p=[0.45, 0.25, 0.1, 0.05, 0.15])),
        channels=int(rng.choice([1, 2], p=[0.5, 0.5])),
        talk_share=float(rng.uniform(0.2, 0.45)),
        talk_saturation=float(rng.uniform(50.0, 250.0)),
        walk_saturation=float(rng.uniform(20.0, 120.0)),
        voice_db=float(rng.uniform(-39.0, -32.0)),
        footstep_db=float(rng.uniform(-44.0, -32.0)),
        hard_floor=bool(rng.uniform() < (0.7 if indoor else 0.5)),
        applause_db=float(rng.uniform(-46.0, -36.0)) if rng.uniform() < 0.08 else None,
        rt60=float(rng.uniform(0.4, 1.8) if indoor else rng.uniform(0.08, 0.4)),
        reverb_wet=float(rng.uniform(0.2, 0.7) if indoor else rng.uniform(0.0, 0.25)),
        ambient=ambient,
        mic_gain_db=float(rng.uniform(-6.0, 6.0)),
        agc_target_db=float(rng.uniform(-28.0, -16.0)) if rng.uniform() < 0.2 else None,
        band=(float(rng.uniform(40.0, 250.0)), float(rng.uniform(4500.0, 7900.0))),
        mic_noise_db=float(rng.uniform(-74.0, -58.0)),
        offscreen_share=float(rng.choice([0.0, rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.8)], p=[0.4, 0.45, 0.15])),
    )


# ---------------------------------------------------------------------------------------------
# The crowd


def expected_talkers(people: float, scene: AudioScene) -> float:
    """Mean number of simultaneous talkers: ~share * N for few people, saturating at share * S."""
    return scene.talk_share * scene.talk_saturation * (1.0 - math.exp(-people / scene.talk_saturation))


def lombard_gain(talkers: float) -> float:
    """Voices rise with the noise around them: up to +8 dB in a big crowd."""
    return float(db_to_gain(min(8.0, 5.0 * math.log10(1.0 + talkers / 6.0))))


def crowd_sound(
    people: int, walkers: int, scene: AudioScene, rng: np.random.Generator, seconds: float = 1.0
) -> np.ndarray:
    """(channels, n) float32 at WORK_RATE: voices, footsteps and applause of `people` people.

    Dry (no room, no microphone): `finish` adds those.
    """
    length = int(round(seconds * WORK_RATE))
    pans = []
    out = np.zeros((scene.channels, length), dtype=np.float32)
    talkers = min(int(rng.poisson(expected_talkers(people, scene))), people) if people > 0 else 0
    effort = lombard_gain(talkers)
    if talkers:
        # Loudness by distance: nearer voices louder; distances relative to the crowd's spread.
        distance = np.sort(rng.lognormal(0.0, 0.7, talkers))
        level = db_to_gain(scene.voice_db) * effort * distance ** -0.8
        solo, bed = level[:MAX_TALKERS], level[MAX_TALKERS:]
        pans = rng.uniform(0.0, 1.0, len(solo))
        out += speech(solo, pans, scene.channels, rng, length)
        if len(bed):
            out += babble_bed(float(np.sqrt(np.sum(bed**2))), len(bed), scene.channels, rng, length)
    if walkers > 0:
        effective = scene.walk_saturation * (1.0 - math.exp(-walkers / scene.walk_saturation))
        out += footsteps(effective * 1.8 * seconds, scene, rng, length)
    if scene.applause_db is not None and people > 0:
        clappers = 40.0 * (1.0 - math.exp(-people / 40.0))
        out += applause(clappers, scene, rng, length)
    return out


_WINDOW = np.hanning(NFFT + 1)[:NFFT].astype(np.float32)  # periodic Hann


def _stft(x: np.ndarray) -> np.ndarray:
    """(..., n) float32 -> (..., frames, bins) complex64; frame k is centred on sample k * HOP."""
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(NFFT // 2, NFFT // 2 + HOP)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, NFFT, axis=-1)[..., ::HOP, :]
    frames = frames[..., : _frame_count(x.shape[-1]), :]
    return scipy.fft.rfft(frames * _WINDOW, axis=-1)


def _istft(z: np.ndarray, length: int) -> np.ndarray:
    """Inverse of _stft (weighted overlap-add) for a (frames, bins) spectrogram -> (length,)."""
    frames = scipy.fft.irfft(z, NFFT, axis=-1).astype(np.float32) * _WINDOW
    total = (frames.shape[0] - 1) * HOP + NFFT
    out = np.zeros(total, dtype=np.float32)
    norm = np.zeros(total, dtype=np.float32)
    for k in range(NFFT // HOP):  # NFFT / HOP interleaved groups of frames do not overlap
        group = frames[k :: NFFT // HOP]
        starts = (np.arange(k, frames.shape[0], NFFT // HOP) * HOP)
        span = group.reshape(-1)
        index = (starts[:, None] + np.arange(NFFT)).reshape(-1)
        out[index] += span
        norm[index] += np.tile(_WINDOW**2, len(starts))
    out = out[NFFT // 2 : NFFT // 2 + length] / np.maximum(norm[NFFT // 2 : NFFT // 2 + length], 1e-3)
    if out.shape[0] < length:
        out = np.pad(out, (0, length - out.shape[0]))
    return out.astype(np.float32)


def _frame_count(length: int) -> int:
    return length // HOP + 1


def syllable_tracks(rng: np.random.Generator, talkers: int, frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per talker and frame: syllable envelope (0..1), vowel index, and consonant onset gate."""
    frame_rate = WORK_RATE / HOP
    max_syllables = int(frames / (0.1 * frame_rate)) + 2
    durations = rng.uniform(0.11, 0.3, (talkers, max_syllables)) * frame_rate
    pauses = np.where(rng.uniform(0, 1, (talkers, max_syllables)) < 0.18,
                      rng.uniform(0.15, 0.6, (talkers, max_syllables)) * frame_rate, 0.0)
    starts = np.cumsum(durations + pauses, axis=1) - (durations + pauses) + pauses
    starts -= rng.uniform(0, 1, (talkers, 1)) * starts[:, 1:2]  # random phase at the block start
    frame_index = np.arange(frames, dtype=np.float64)
    envelope = np.zeros((talkers, frames), dtype=np.float32)
    vowel = np.zeros((talkers, frames), dtype=np.int64)
    onset = np.zeros((talkers, frames), dtype=np.float32)
    vowel_choice = rng.integers(0, len(VOWELS), (talkers, max_syllables))
    stress = rng.uniform(0.5, 1.0, (talkers, max_syllables))
    for t in range(talkers):  # one searchsorted per talker, not per sample
        k = np.clip(np.searchsorted(starts[t], frame_index, side="right") - 1, 0, max_syllables - 1)
        position = (frame_index - starts[t, k]) / durations[t, k]
        inside = (position >= 0) & (position < 1)
        envelope[t] = np.where(inside, np.sin(np.pi * np.clip(position, 0, 1)) ** 0.7 * stress[t, k], 0.0)
        vowel[t] = vowel_choice[t, k]
        onset[t] = np.where(inside & (position < 0.18), 1.0, 0.0)
    return envelope, vowel, onset


def speech(levels: np.ndarray, pans: np.ndarray, channels: int, rng: np.random.Generator, length: int) -> np.ndarray:
    """Individually synthesised talkers, mixed to (channels, length)."""
    talkers = len(levels)
    voice = rng.choice(3, talkers, p=[0.45, 0.45, 0.1])  # male, female, child
    base_f0 = np.choose(voice, [rng.uniform(85, 150, talkers), rng.uniform(165, 255, talkers),
                                rng.uniform(240, 340, talkers)])
    formant_scale = np.choose(voice, [np.ones(talkers), np.full(talkers, 1.17), np.full(talkers, 1.3)])
    formant_scale = formant_scale * rng.uniform(0.94, 1.06, talkers)

    # Pitch: slow intonation plus jitter; the source is a band-limited-enough sawtooth.
    t = np.arange(length, dtype=np.float32) / WORK_RATE
    rate = rng.uniform(0.4, 2.0, (talkers, 1)).astype(np.float32)
    contour = (0.12 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.3, (talkers, 1)))
               + rng.normal(0, 0.05, (talkers, 1))).astype(np.float32)
    f0 = base_f0[:, None].astype(np.float32) * np.exp2(contour)
    phase = np.cumsum(f0 / WORK_RATE, axis=1, dtype=np.float64) + rng.uniform(0, 1, (talkers, 1))
    source = (1.0 - 2.0 * (phase % 1.0)).astype(np.float32)
    spectrum = _stft(source)  # talkers x frames x bins
    frames = spectrum.shape[1]

    envelope, vowel, onset = syllable_tracks(rng, talkers, frames)
    # Formant envelope of every (talker, vowel) pair, then looked up per frame.
    formants = VOWELS[None, :, :] * formant_scale[:, None, None]  # talkers x vowels x 3
    offsets = (FREQS[None, None, :, None] - formants[:, :, None, :]) / (0.5 * FORMANT_BANDWIDTHS)
    table = (FORMANT_GAINS / (1.0 + offsets**2)).sum(axis=3).astype(np.float32) + 0.02  # t x v x bins
    shape = table[np.arange(talkers)[:, None], vowel]  # talkers x frames x bins
    shape *= envelope[:, :, None]
    voiced = spectrum * shape

    # Consonants: noise bursts at syllable onsets, bright (2.5-7 kHz), from one shared noise field.
    hiss_centre = rng.uniform(2500, 6500, talkers)
    hiss_shape = np.exp(-(((FREQS[None, :] - hiss_centre[:, None]) / 1800.0) ** 2))  # talkers x bins
    noise = _complex_noise(rng, (frames, len(FREQS)))

    gains = levels[:, None] * _pan_gains(pans, channels)  # talkers x channels
    out = np.empty((channels, length), dtype=np.float32)
    for c in range(channels):
        weights = gains[:, c].astype(np.float32)
        mix = np.tensordot(weights, voiced, axes=(0, 0))
        consonants = (onset * (1.5 * weights)[:, None]).T @ hiss_shape.astype(np.float32)  # frames x bins
        out[c] = _istft(mix + noise * consonants, length)
    return _normalise_talkers(out, levels)


def _normalise_talkers(out: np.ndarray, levels: np.ndarray) -> np.ndarray:
    # Keep the mix at the RMS its levels promise (sum of independent sources: sqrt(sum level^2)).
    target = float(np.sqrt(np.sum(levels**2)) * 0.7)
    current = rms(out)
    return (out * (target / current if current > 0 else 1.0)).astype(np.float32)


def _complex_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    real = rng.standard_normal(shape, dtype=np.float32)
    imag = rng.standard_normal(shape, dtype=np.float32)
    return (real + 1j * imag).astype(np.complex64)


def _pan_gains(pans: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        return np.ones((len(pans), 1), dtype=np.float32)
    angle = pans * (np.pi / 2)
    return np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32) * np.sqrt(2)


def speech_shaped(freqs: np.ndarray) -> np.ndarray:
    """Long-term average speech spectrum: a bump around 400-600 Hz, about -8 dB/octave above."""
    return (freqs / (freqs + 120.0)) / (1.0 + (freqs / 550.0) ** 2) ** 0.65


def babble_bed(level: float, talkers: int, channels: int, rng: np.random.Generator, length: int) -> np.ndarray:
    """Many distant talkers: speech-shaped noise whose syllabic modulation fades as they grow."""
    frames = _frame_count(length)
    depth = 1.0 / math.sqrt(1.0 + talkers / 3.0)
    t = np.arange(frames) * HOP / WORK_RATE
    modulation = np.ones(frames, dtype=np.float32)
    for _ in range(3):
        modulation += depth * 0.5 * np.sin(2 * np.pi * rng.uniform(2.5, 6.0) * t + rng.uniform(0, 6.3))
    modulation = np.clip(modulation, 0.05, None).astype(np.float32)
    shape = modulation[:, None] * speech_shaped(FREQS)[None, :]
    out = np.empty((channels, length), dtype=np.float32)
    for c in range(channels):
        out[c] = _istft(_complex_noise(rng, (frames, len(FREQS))) * shape, length)
    return out * (level / rms(out))


def transient_kernel(rng: np.random.Generator, seconds: float, decay: float, band: tuple[float, float]) -> np.ndarray:
    """A short decaying noise burst limited to `band` Hz, unit peak-normalised energy."""
    n = int(seconds * WORK_RATE)
    burst = rng.standard_normal(n).astype(np.float32) * np.exp(-np.arange(n) / (decay * WORK_RATE))
    kernel = band_limit(np.pad(burst, (0, n)), band[0], band[1])[:n]  # padded: no wrap-around
    return kernel / (np.sqrt(np.sum(kernel**2)) + 1e-9)


def _events(rng: np.random.Generator, rate: float, length: int, kernels: list[np.ndarray], amplitude: float,
            cap: int) -> tuple[np.ndarray, float]:
    """Place Poisson(rate) copies of the kernels at random times; returns (signal, bed power)."""
    count = int(rng.poisson(rate))
    placed = min(count, cap)
    out = np.zeros(length, dtype=np.float32)
    if placed:
        times = rng.integers(0, length, placed)
        strengths = amplitude * rng.lognormal(0.0, 0.5, placed).astype(np.float32)
        which = rng.integers(0, len(kernels), placed)
        for k, kernel in enumerate(kernels):
            impulses = np.zeros(length, dtype=np.float32)
            chosen = which == k
            np.add.at(impulses, times[chosen], strengths[chosen])
            out += signal.fftconvolve(impulses, kernel)[:length].astype(np.float32)
    excess = max(count - placed, 0)
    return out, excess * amplitude**2


def footsteps(rate: float, scene: AudioScene, rng: np.random.Generator, length: int) -> np.ndarray:
    if scene.hard_floor:  # heels on stone: a click over a thump
        kernels = [transient_kernel(rng, 0.06, rng.uniform(0.006, 0.015), (rng.uniform(600, 1500), rng.uniform(3000, 7000)))
                   + 0.5 * transient_kernel(rng, 0.06, 0.02, (60, 300)) for _ in range(3)]
    else:  # soft soles, grass, carpet: dull
        kernels = [transient_kernel(rng, 0.08, rng.uniform(0.01, 0.03), (50, rng.uniform(400, 1200))) for _ in range(3)]
    amplitude = float(db_to_gain(scene.footstep_db)) * 40.0
    steps, bed_power = _events(rng, rate, length, kernels, amplitude, MAX_STEPS)
    if bed_power > 0:  # the shuffle of many distant feet
        shuffle = _istft(_complex_noise(rng, (_frame_count(length), len(FREQS)))
                         * (1.0 / (1.0 + (FREQS / 1500.0) ** 2))[None, :], length)
        steps += shuffle * (0.5 * math.sqrt(bed_power / length) / rms(shuffle))
    return np.broadcast_to(steps, (scene.channels, length)).copy()


def applause(clappers: float, scene: AudioScene, rng: np.random.Generator, length: int) -> np.ndarray:
    kernels = [transient_kernel(rng, 0.02, rng.uniform(0.002, 0.005), (800, 6000)) for _ in range(4)]
    rate = clappers * rng.uniform(2.0, 4.0) * length / WORK_RATE
    claps, _ = _events(rng, rate, length, kernels, float(db_to_gain(scene.applause_db)) * 30.0, 400)
    return np.broadcast_to(claps, (scene.channels, length)).copy()


def reverberate(dry: np.ndarray, scene: AudioScene, rng: np.random.Generator) -> np.ndarray:
    """Add a diffuse tail: exponentially decaying noise as the room's impulse response."""
    if scene.reverb_wet <= 0:
        return dry
    n = int(min(scene.rt60, 1.2) * WORK_RATE)
    decay = np.exp(-6.9 * np.arange(n) / (scene.rt60 * WORK_RATE)).astype(np.float32)
    out = np.empty_like(dry)
    for c in range(dry.shape[0]):
        response = rng.standard_normal(n).astype(np.float32) * decay
        response /= np.sqrt(np.sum(response**2)) + 1e-9
        wet = signal.fftconvolve(dry[c], response)[: dry.shape[1]]
        out[c] = dry[c] + scene.reverb_wet * wet
    return out


# ---------------------------------------------------------------------------------------------
# Ambient sound (independent of the crowd)


def ambient_sound(scene: AudioScene, seconds: float, start: float = 0.0) -> np.ndarray:
    """(channels, n) float32 at WORK_RATE of every ambient source of the scene.

    Each source has its own seed, so its sound is the same whatever else the scene holds.
    """
    length = int(round(seconds * WORK_RATE))
    out = np.zeros((scene.channels, length), dtype=np.float32)
    for source in scene.ambient:
        rng = np.random.default_rng([source["seed"], int(round(start * 1000))])
        mono = AMBIENT_MAKERS[source["kind"]](rng, length)
        mono *= float(db_to_gain(source["level_db"])) / rms(mono)
        delay = int(rng.integers(0, 24))
        for c in range(scene.channels):
            out[c] += np.roll(mono, delay * c)
    return out


def _filtered_noise(rng: np.random.Generator, length: int, band: tuple[float, float], order: int = 2) -> np.ndarray:
    return band_limit(rng.standard_normal(length).astype(np.float32), band[0], band[1], order)


def _slow_modulation(rng: np.random.Generator, length: int, rate: float, depth: float) -> np.ndarray:
    points = max(int(length / WORK_RATE * rate) + 3, 3)
    knots = 1.0 + depth * rng.uniform(-1, 1, points)
    return np.interp(np.linspace(0, points - 1, length), np.arange(points), knots).astype(np.float32)


def _hum(rng: np.random.Generator, length: int) -> np.ndarray:
    t = np.arange(length, dtype=np.float32) / WORK_RATE
    mains = float(rng.choice([50.0, 60.0]))
    tones = sum(rng.uniform(0.1, 1.0) * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3)) for k in range(1, 7))
    fan = _filtered_noise(rng, length, (rng.uniform(60, 200), rng.uniform(800, 3000)))
    return (tones / 3.0 + fan / rms(fan) * rng.uniform(0.3, 1.5)).astype(np.float32)


def _traffic(rng: np.random.Generator, length: int) -> np.ndarray:
    rumble = _filtered_noise(rng, length, (25, rng.uniform(150, 400)))
    car = _filtered_noise(rng, length, (rng.uniform(80, 200), rng.uniform(1500, 4000)))
    t = np.arange(length) / WORK_RATE
    passing = np.exp(-(((t - rng.uniform(-1, t[-1] + 1)) / rng.uniform(0.8, 3.0)) ** 2))
    return (rumble / rms(rumble) + passing * car / rms(car) * rng.uniform(0.5, 2.0)).astype(np.float32)


def _wind(rng: np.random.Generator, length: int) -> np.ndarray:
    gusts = _slow_modulation(rng, length, rng.uniform(0.5, 3.0), 0.8) ** 2
    return (_filtered_noise(rng, length, (20, rng.uniform(300, 900))) * gusts).astype(np.float32)


def _music(rng: np.random.Generator, length: int) -> np.ndarray:
    t = np.arange(length, dtype=np.float32) / WORK_RATE
    beat = 60.0 / rng.uniform(75, 140)
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    chord_steps = np.array([[0, 4, 7], [5, 9, 12], [7, 11, 14], [-3, 0, 4]])
    bar = np.floor(t / (beat * 2)).astype(np.int64) % len(chord_steps)
    out = np.zeros(length, dtype=np.float32)
    for voice in range(3):
        freq = root * 2 ** (chord_steps[bar, voice] / 12)
        phase = np.cumsum(freq / WORK_RATE)
        out += (np.sin(2 * np.pi * phase) + 0.3 * np.sin(4 * np.pi * phase)).astype(np.float32)
    since_beat = (t % beat).astype(np.float32)
    kick = np.sin(2 * np.pi * 55 * since_beat) * np.exp(-since_beat / 0.08)
    hats = _filtered_noise(rng, length, (5000, 7800)) * np.exp(-((t + beat / 2) % beat) / 0.02)
    return (out / 3 + 1.5 * kick + 0.3 * hats / rms(hats)).astype(np.float32)


def _announcer(rng: np.random.Generator, length: int) -> np.ndarray:
    voice = speech(np.array([1.0]), np.array([0.5]), 1, rng, length)
    return band_limit(voice, 300.0, 3400.0, order=4)[0]  # through a loudspeaker


def _birds(rng: np.random.Generator, length: int) -> np.ndarray:
    out = np.zeros(length, dtype=np.float32)
    for _ in range(int(rng.integers(1, 6))):
        n = int(rng.uniform(0.04, 0.15) * WORK_RATE)
        start = int(rng.integers(0, max(length - n, 1)))
        sweep = np.linspace(rng.uniform(2000, 6000), rng.uniform(2000, 7000), n)
        chirp = np.sin(2 * np.pi * np.cumsum(sweep) / WORK_RATE) * np.hanning(n)
        out[start : start + n] += chirp[: length - start].astype(np.float32)
    return out


AMBIENT_MAKERS = {"hum": _hum, "traffic": _traffic, "wind": _wind, "music": _music,
                  "announcer": _announcer, "birds": _birds}


# ---------------------------------------------------------------------------------------------
# The microphone and the recorder


def finish(mix: np.ndarray, scene: AudioScene, rng: np.random.Generator) -> np.ndarray:
    """Mic band limits, gain or AGC, soft limiting, resampling to the native rate, self-noise."""
    shaped = band_limit(mix, scene.band[0], scene.band[1])
    if scene.agc_target_db is not None:
        gain = float(db_to_gain(scene.agc_target_db)) / rms(shaped)
    else:
        gain = float(db_to_gain(scene.mic_gain_db))
    shaped *= min(gain, 1e4)
    native = resample(shaped, scene.sample_rate)
    native += float(db_to_gain(scene.mic_noise_db)) * rng.standard_normal(native.shape, dtype=np.float32)
    return np.tanh(native).astype(np.float32)  # a soft limiter instead of hard clipping


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == WORK_RATE:
        return audio.copy()
    ratio = Fraction(rate, WORK_RATE)
    return signal.resample_poly(audio, ratio.numerator, ratio.denominator, axis=1).astype(np.float32)


def scene_audio(
    people: int, walkers: int, scene: AudioScene, rng: np.random.Generator, seconds: float = 1.0
) -> np.ndarray:
    """One recording: crowd (with the room) + ambient, through the microphone. Native rate."""
    crowd = reverberate(crowd_sound(people, walkers, scene, rng, seconds), scene, rng)
    return finish(crowd + ambient_sound(scene, seconds), scene, rng)
