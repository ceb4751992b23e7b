"""The log-mel front end follows the VGGish convention; converted VGGish weights load from a local file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from avcc_stream.model.audio import AudioFeatureExtractor, LogMelFrontEnd, load_vggish_weights

RATE = 16_000


def numpy_vggish_log_mel(signal: np.ndarray) -> np.ndarray:
    """An independent float64 implementation of vggish_input.waveform_to_examples for one patch."""
    window, hop, fft = 400, 160, 512
    frames = np.lib.stride_tricks.sliding_window_view(signal.astype(np.float64), window)[::hop]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)  # periodic Hann
    magnitude = np.abs(np.fft.rfft(frames * hann, fft))  # rfft zero-pads each frame at its end
    mel = lambda hz: 1127.0 * np.log(1.0 + hz / 700.0)  # noqa: E731 - HTK mel
    bins = mel(np.linspace(0, RATE / 2, fft // 2 + 1))
    edges = np.linspace(mel(125.0), mel(7500.0), 64 + 2)
    weights = np.zeros((fft // 2 + 1, 64))
    for band in range(64):
        lower, center, upper = edges[band : band + 3]
        rising = (bins - lower) / (center - lower)
        falling = (upper - bins) / (upper - center)
        weights[:, band] = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return np.log(magnitude @ weights + 0.01)[:96]


def signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(RATE) / RATE
    return {
        "noise": 0.1 * rng.standard_normal(RATE),
        "chirp": 0.5 * np.sin(2 * np.pi * (100 * t + 3000 * t**2)),
        "speech_like": 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(RATE),
        "silence": np.zeros(RATE),
    }


@pytest.mark.parametrize("name", list(signals()))
def test_log_mel_matches_an_independent_numpy_vggish(name):
    signal = signals()[name]
    ours = LogMelFrontEnd()(torch.from_numpy(signal).float().unsqueeze(0))[0, 0].numpy()
    reference = numpy_vggish_log_mel(signal.astype(np.float32))
    assert ours.shape == reference.shape == (96, 64)
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)


def test_a_1khz_tone_lands_in_the_mel_band_centred_nearest_1khz():
    tone = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE)
    log_mel = LogMelFrontEnd()(torch.from_numpy(tone).float().unsqueeze(0))[0, 0].numpy()
    mel = lambda hz: 1127.0 * np.log(1.0 + hz / 700.0)  # noqa: E731
    centres = np.linspace(mel(125.0), mel(7500.0), 66)[1:-1]
    expected_band = int(np.argmin(np.abs(centres - mel(1000.0))))
    per_band = log_mel.mean(axis=0)
    assert int(np.argmax(per_band)) == expected_band == 19
    assert (per_band[expected_band] - per_band[40:]).min() > 5.0  # far bands hold ~nothing


def test_front_end_runs_on_the_models_device_and_batches():
    front_end = LogMelFrontEnd()
    batch = torch.from_numpy(np.stack([signals()["noise"], signals()["chirp"]])).float()
    together = front_end(batch)
    torch.testing.assert_close(together[1], front_end(batch[1:])[0])
    assert front_end.mel_matrix.device == batch.device


def test_too_short_audio_is_refused_with_the_needed_length():
    with pytest.raises(ValueError, match="15600"):
        LogMelFrontEnd()(torch.zeros(1, 8000))


@pytest.mark.parametrize("backbone", ["vggish-conv", "vggish"])
def test_converted_vggish_weights_load_from_a_local_file(tmp_path, backbone):
    torch.manual_seed(0)
    source = AudioFeatureExtractor(144, backbone)
    # The common PyTorch VGGish ports name tensors features.N.* and embeddings.N.* (plus PCA params).
    weights = {f"features.{k}": v for k, v in source.backbone.features.state_dict().items()}
    if backbone == "vggish":
        weights.update({f"embeddings.{k}": v for k, v in source.embeddings.state_dict().items()})
    weights["pproc._pca_matrix"] = torch.zeros(128, 128)
    path = tmp_path / "vggish.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path))

    torch.manual_seed(1)
    target = AudioFeatureExtractor(144, backbone)
    loaded = load_vggish_weights(target, path)
    assert len(loaded) == len(weights) - 1
    torch.testing.assert_close(target.backbone.features[0].weight, source.backbone.features[0].weight)
    waveform = 0.1 * torch.randn(1, RATE)
    # VGGish weights cover the conv stack (and, for the full backbone, its fc head); the
    # vggish-conv head Linear(512 -> 128) is ours and stays as initialised.
    compare = (lambda m: m.embed(waveform)) if backbone == "vggish" else (lambda m: m.backbone(m.front_end(waveform)))
    torch.testing.assert_close(compare(target.eval()), compare(source.eval()))


def test_vggish_weights_of_the_wrong_shape_are_refused_naming_the_tensor(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"features.0.weight": torch.zeros(32, 1, 3, 3), "features.0.bias": torch.zeros(32)}, str(path))
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_vggish_weights(AudioFeatureExtractor(144), path)


@pytest.mark.parametrize("dtype", [np.int16, np.int32])
@pytest.mark.parametrize("channels", [1, 2])
def test_integer_pcm_becomes_the_same_float_waveform_whatever_the_channel_count(dtype, channels):
    # A stereo int16 WAV (scipy.io.wavfile, transposed to channels x n) once came out unscaled:
    # the channel mean turned it into float64 before the integer check.
    from avcc_stream.preprocess import prepare_audio

    full_scale = np.iinfo(dtype).max + 1
    signal = 0.25 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)
    pcm = np.round(signal * full_scale).astype(dtype)
    samples = np.stack([pcm] * channels) if channels > 1 else pcm
    waveform = prepare_audio(samples, RATE)
    assert waveform.dtype == torch.float32
    np.testing.assert_allclose(waveform.numpy(), signal, atol=2.0 / np.iinfo(np.int16).max)
