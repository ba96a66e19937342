"""media.audio / media.dsp: real audio files (written with PyAV), the official decoder, and the official mel
front end's math (torchaudio's `resample` and `MelSpectrogram`, which has no CPU wheel for torch 2.13) checked
against plain float64 numpy references written here from torchaudio's / librosa's documented definitions.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

import ltx_reference  # noqa: F401  (stubs torchaudio before ltx-pipelines imports ltx-core)
from ltx_pipelines.utils.media_io import decode_audio_from_file
from media_files import frame_colours, tone, write_audio, write_video

from diffusers_ltx2.media import (
    load_audio, log_mel_spectrogram, mel_filterbank, resample_audio, save_audio, to_channels, waveform_to_mel,
)

# ---------------------------------------------------------------- plain references (float64 numpy)


def reference_resample(x: np.ndarray, orig_sr: int, new_sr: int, zeros: int = 6, rolloff: float = 0.99):
    """torchaudio `resample` (sinc_interp_hann) evaluated directly: output sample j (time j / new) is
    sum_i x[i] * h(i / orig - j / new) with h(t) = base/orig * sinc(pi * base * t) * cos^2(pi * base * t / (2 zeros))
    for |base * t| <= zeros (0 outside); rates divided by their gcd, base = min(orig, new) * rolloff; x is zero
    outside the signal; ceil(N * new / orig) outputs."""
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    base = min(orig, new) * rolloff
    n_out = math.ceil(x.shape[-1] * new / orig)
    i = np.arange(x.shape[-1])
    out = np.zeros((x.shape[0], n_out))
    for j in range(n_out):
        t = (i / orig - j / new) * base
        keep = np.abs(t) <= zeros
        tk = t[keep]
        h = np.sinc(tk) * np.cos(np.pi * tk / zeros / 2) ** 2 * base / orig
        out[:, j] = x[:, keep] @ h
    return out


def reference_log_mel(x: np.ndarray, sr: int, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    """Centred (reflect-padded) magnitude STFT with a periodic Hann window, Slaney mel filters with Slaney
    normalisation (librosa.filters.mel(htk=False, norm="slaney") / torchaudio melscale_fbanks), log(max(., 1e-5));
    `(C, T, n_mels)`."""
    def hz_to_mel(f):
        f = np.asarray(f, float)
        return np.where(f >= 1000, 15 + np.log(np.maximum(f, 1e-9) / 1000) / (np.log(6.4) / 27), 3 * f / 200)

    def mel_to_hz(m):
        return np.where(m >= 15, 1000 * np.exp(np.log(6.4) / 27 * (m - 15)), 200 * m / 3)

    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs - lo) / (mid - lo)
        falling = (hi - freqs) / (hi - mid)
        fb[:, m] = np.maximum(0, np.minimum(rising, falling)) * 2 / (hi - lo)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    padded = np.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    n_frames = x.shape[-1] // hop + 1
    frames = np.stack([padded[:, k * hop : k * hop + n_fft] for k in range(n_frames)], axis=1)
    spectrum = np.abs(np.fft.rfft(frames * window, axis=-1))
    return np.log(np.maximum(spectrum @ fb, 1e-5))


# ---------------------------------------------------------------- signal math


@pytest.mark.parametrize("orig,new", [(44100, 16000), (48000, 16000), (22050, 16000), (16000, 24000), (8000, 16000)])
def test_resample_equals_torchaudio_definition(orig, new):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 1500))
    theirs = reference_resample(x, orig, new)
    ours64 = resample_audio(torch.from_numpy(x), orig, new).numpy()
    assert ours64.shape == theirs.shape == (2, math.ceil(1500 * new / orig))
    assert np.abs(ours64 - theirs).max() < 1e-9
    # float32: the kernel is computed in float32, as torchaudio does for float32 waveforms
    ours32 = resample_audio(torch.from_numpy(x).float(), orig, new).double().numpy()
    assert np.abs(ours32 - theirs).max() < 5e-5


def test_resample_keeps_a_band_limited_tone():
    x = torch.from_numpy(tone(1.0, 44100, freqs=(440.0,)))
    y = resample_audio(x, 44100, 16000)
    t = np.arange(16000) / 16000
    assert y.shape == (1, 16000)
    assert np.abs(y[0, 100:-100].numpy() - 0.5 * np.sin(2 * np.pi * 440 * t[100:-100])).max() < 1e-3
    assert resample_audio(x, 44100, 44100) is x
    with pytest.raises(ValueError, match="target_sr must be a positive integer"):
        resample_audio(x, 44100, 0)
    with pytest.raises(ValueError, match="orig_sr must be a positive integer"):
        resample_audio(x, 22050.5, 16000)


def test_mel_filterbank_and_log_mel_equal_the_reference():
    rng = np.random.default_rng(1)
    x = np.concatenate([tone(0.4, 16000, freqs=(300.0, 3000.0)), 0.1 * rng.standard_normal((2, 6400))], -1)
    theirs = reference_log_mel(x.astype(np.float64), 16000, 1024, 160, 64)
    # float64 in: the same math (the filterbank is float32, as torchaudio's)
    ours64 = log_mel_spectrogram(torch.from_numpy(x), 16000, 1024, 160, 64).numpy()
    assert ours64.shape == theirs.shape == (2, 12800 // 160 + 1, 64)
    assert np.abs(ours64 - theirs).max() < 2e-5
    # float32 (what the pipeline uses): log of bins near the 1e-5 floor amplifies fp32 STFT rounding, so the
    # comparison is on bins above 1e-3 in the log domain and on everything in the linear domain
    ours32 = log_mel_spectrogram(torch.from_numpy(x).float(), 16000, 1024, 160, 64).double().numpy()
    loud = theirs > np.log(1e-3)
    assert loud.mean() > 0.5 and np.abs(ours32 - theirs)[loud].max() < 1e-4
    assert np.abs(np.exp(ours32) - np.exp(theirs)).max() < 1e-5 * np.exp(theirs).max()
    fb = mel_filterbank(513, 0.0, 8000.0, 64, 16000)
    assert fb.shape == (513, 64) and (fb >= 0).all() and (fb.sum(0) > 0).all()


def test_waveform_to_mel_feeds_the_audio_vae_encoder(tiny_components):
    """Any rate and channel count in -> the tiny diffusers audio VAE's own input layout, encodable."""
    vae = tiny_components["audio_vae"]
    cfg = vae.config
    mono_44k = torch.from_numpy(tone(0.5, 44100, freqs=(440.0,)))
    mel = waveform_to_mel(mono_44k, 44100, vae)
    assert mel.shape == (1, cfg.in_channels, 8000 // cfg.mel_hop_length + 1, cfg.mel_bins)
    # same as the stereo 16 kHz signal the official processor would see
    stereo_16k = resample_audio(mono_44k, 44100, 16000).expand(2, -1)
    expected = reference_log_mel(stereo_16k.double().numpy(), 16000, 1024, cfg.mel_hop_length, cfg.mel_bins)
    loud = expected > np.log(1e-3)
    assert loud.any() and np.abs(mel[0].double().numpy() - expected)[loud].max() < 1e-4
    with torch.no_grad():
        latent = vae.encode(mel).latent_dist.mode()
    assert latent.shape[:2] == (1, cfg.latent_channels)


# ---------------------------------------------------------------- files


@pytest.mark.parametrize("ext,rate,channels,tol", [
    (".wav", 44100, 2, 1 / 32767), (".flac", 48000, 1, 1 / 32767), (".mp3", 22050, 2, 0.05), (".m4a", 24000, 1, 0.05),
])
def test_load_audio_files_any_rate_and_channels(tmp_path, ext, rate, channels, tol):
    wave = tone(1.0, rate, freqs=(440.0, 660.0)[:channels])
    path = write_audio(tmp_path / f"a{ext}", wave, rate)
    ours, sr = load_audio(path)
    assert sr == rate and ours.dtype == torch.float32 and ours.shape[0] == channels
    if ext in (".wav", ".flac"):
        assert ours.shape[1] == wave.shape[1] and np.abs(ours.numpy() - wave).max() <= tol
    else:  # lossy codecs add priming / padding samples: compare the spectrum peak and the level
        assert abs(ours.shape[1] - wave.shape[1]) < 0.1 * rate
        spectrum = np.abs(np.fft.rfft(ours[0].numpy()))
        assert abs(spectrum.argmax() * rate / ours.shape[1] - 440.0) < 3.0
        assert abs(float(ours.abs().max()) - 0.5) < 0.1
    official = decode_audio_from_file(path, torch.device("cpu"))
    assert official.sampling_rate == rate
    if ext in (".wav", ".flac"):  # the official decoder gives the same samples
        assert torch.allclose(official.waveform[0], ours, atol=1e-6)
    else:  # it reads raw pts, ignoring the stream's start offset (encoder delay): it loses the end of the file
        assert official.waveform.shape[-1] <= ours.shape[1]
    # to the model's layout in one call
    at_16k, sr = load_audio(path, 16000, channels=2)
    assert sr == 16000 and at_16k.shape == (2, math.ceil(ours.shape[1] * 16000 / rate))


def test_load_audio_window_matches_official_decoder(tmp_path):
    rate = 44100
    path = write_audio(tmp_path / "w.wav", tone(2.0, rate), rate)
    ours, _ = load_audio(path, start_time=0.5, duration=0.75)
    official = decode_audio_from_file(path, torch.device("cpu"), start_time=0.5, max_duration=0.75)
    assert ours.shape == (2, round(0.75 * rate))
    assert torch.allclose(official.waveform[0], ours, atol=1e-6)
    full, _ = load_audio(path)
    assert torch.equal(ours, full[:, round(0.5 * rate) : round(1.25 * rate)])


def test_load_audio_surround_file_to_the_models_stereo_16k(tmp_path):
    wave = tone(0.5, 48000, freqs=(200.0, 300.0, 400.0, 500.0, 600.0, 700.0))
    path = write_audio(tmp_path / "surround.wav", wave, 48000)
    six, sr = load_audio(path)
    assert sr == 48000 and six.shape == (6, 24000) and np.abs(six.numpy() - wave).max() <= 1 / 32767
    stereo, sr = load_audio(path, 16000, channels=2)   # front left / right, resampled
    assert sr == 16000 and stereo.shape == (2, 8000)
    assert torch.equal(stereo, resample_audio(six[:2], 48000, 16000))


@pytest.mark.parametrize("ext", [".mp3", ".m4a"])
def test_load_audio_window_of_lossy_files_is_aligned(tmp_path, ext):
    """Lossy streams start at the encoder delay: the window is measured from the first sample, so it lines
    up with the source signal (the official decoder's raw-pts window is shifted by the delay)."""
    rate = 22050
    wave = tone(3.0, rate, freqs=(440.0, 440.0))
    path = write_audio(tmp_path / f"w{ext}", wave, rate)
    for start in (0.5, 2.0):  # 2.0: after a seek
        ours, _ = load_audio(path, start_time=start, duration=0.75)
        assert ours.shape == (2, round(0.75 * rate))
        source = wave[:, round(start * rate) : round(start * rate) + ours.shape[1]]
        assert np.abs(ours.numpy() - source).max() < 0.06   # a 50 ms shift of a 440 Hz tone would be ~1.0


def test_load_audio_reads_a_video_soundtrack(tmp_path):
    audio = tone(0.8, 48000)
    path = write_video(tmp_path / "v.mp4", frame_colours(9, 32, 32), fps=24, audio=audio, sample_rate=48000)
    wave, sr = load_audio(path)
    assert sr == 48000 and wave.shape[0] == 2 and abs(wave.shape[1] - audio.shape[1]) < 4800


def test_load_audio_from_arrays():
    wave = tone(0.5, 16000)
    a, sr = load_audio(wave, 16000, start_time=0.1, duration=0.2)
    assert sr == 16000 and torch.equal(a, torch.from_numpy(wave[:, 1600:4800]))
    b, _ = load_audio(torch.from_numpy(wave[0]), 16000)
    assert b.shape == (1, 8000)
    c, _ = load_audio((wave * 32767).astype(np.int16), 16000)
    assert (c - torch.from_numpy(wave)).abs().max() < 1e-4


def test_to_channels():
    mono = torch.arange(6.0).reshape(1, 6)
    assert torch.equal(to_channels(mono, 2), mono.expand(2, 6))
    stereo = torch.stack([torch.ones(4), 3 * torch.ones(4)])
    assert torch.equal(to_channels(stereo, 1), 2 * torch.ones(1, 4))
    six = torch.arange(12.0).reshape(1, 6, 2)
    assert torch.equal(to_channels(six, 2), six[:, :2])
    with pytest.raises(ValueError, match="cannot turn 2-channel audio into 3 channels"):
        to_channels(stereo, 3)
    with pytest.raises(ValueError, match="channel count"):
        to_channels(stereo, 0)


def test_saved_audio_gets_the_mode_open_gives(tmp_path):
    """As the MP4 writer: a new file gets 0o666 minus the umask, a replaced file keeps its mode (not mkstemp's 0600)."""
    import stat

    umask = os.umask(0o022)
    try:
        path = save_audio(tmp_path / "new.wav", np.zeros((2, 240), np.float32), 24000)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        os.chmod(path, 0o640)
        save_audio(path, np.zeros((2, 240), np.float32), 24000)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    finally:
        os.umask(umask)


def test_save_audio_round_trip_and_atomic(tmp_path):
    wave = tone(0.3, 24000)
    for ext in (".wav", ".flac"):
        path = save_audio(tmp_path / f"out{ext}", wave, 24000)
        back, sr = load_audio(path)
        assert sr == 24000 and np.abs(back.numpy() - wave).max() <= 1 / 32767
    with pytest.raises(ValueError, match=".wav or .flac"):
        save_audio(tmp_path / "out.mp3", wave, 24000)
    with pytest.raises(ValueError, match="NaN"):
        save_audio(tmp_path / "nan.wav", np.full((2, 10), np.nan, np.float32), 24000)
    with pytest.raises(FileNotFoundError, match="output folder does not exist"):
        save_audio(tmp_path / "no" / "x.wav", wave, 24000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.flac", "out.wav"]


# ---------------------------------------------------------------- bad input


def test_bad_audio_input_gives_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.wav"):
        load_audio(tmp_path / "gone.wav")
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"definitely not audio" * 10)
    with pytest.raises(ValueError, match="junk.mp3"):
        load_audio(junk)
    silent_video = write_video(tmp_path / "silent.mp4", frame_colours(9, 32, 32))
    with pytest.raises(ValueError, match="silent.mp4 has no audio stream"):
        load_audio(silent_video)
    short = write_audio(tmp_path / "short.wav", tone(0.5, 16000), 16000)
    with pytest.raises(ValueError, match="start_time 2 s is outside the audio"):
        load_audio(short, start_time=2.0)
    with pytest.raises(ValueError, match="sample_rate must be a positive integer"):
        load_audio(short, sample_rate=0)
    with pytest.raises(ValueError, match="sample_rate must be a positive integer"):
        load_audio(short, sample_rate=10_000_000)
    with pytest.raises(ValueError, match="start_time must be"):
        load_audio(short, start_time=-1)
    with pytest.raises(ValueError, match="duration must be"):
        load_audio(short, duration=0)
    with pytest.raises(ValueError, match="needs its sample_rate"):
        load_audio(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="outside the waveform"):
        load_audio(np.zeros((2, 100), np.float32), 16000, start_time=1.0)
    with pytest.raises(ValueError, match="NaN"):
        load_audio(np.full((2, 100), np.nan, np.float32), 16000)
    with pytest.raises(ValueError, match=r"\(samples,\) or \(channels, samples\)"):
        load_audio(np.zeros((1, 2, 100), np.float32), 16000)
    with pytest.raises(ValueError, match="file path, a tensor or a numpy array"):
        load_audio([0.0, 0.1], 16000)
    with pytest.raises(ValueError, match="too short for the mel front end"):
        log_mel_spectrogram(torch.zeros(1, 100), 16000, 1024, 160, 64)


@pytest.mark.parametrize("channels,width", [(8, 2), (8, 1), (12, 4), (5, 2)])
def test_load_audio_wav_of_layouts_swresample_cannot_take(tmp_path, channels, width):
    """WAVs whose layout FFmpeg names only by its channel count ("8 channels", ...) segfaulted
    `av.AudioResampler`; each decodes to exactly its integer samples scaled as swresample does (u8, s16, s32)."""
    import wave

    rng = np.random.default_rng(channels * 10 + width)
    n = 3000
    dtype, offset, scale = {1: ("u1", 128.0, 128.0), 2: ("<i2", 0.0, 32768.0), 4: ("<i4", 0.0, 2.0 ** 31)}[width]
    info = np.iinfo(np.dtype(dtype))
    ints = rng.integers(info.min, info.max, size=(n, channels), endpoint=True).astype(dtype)
    path = tmp_path / f"c{channels}_w{width}.wav"
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(24000)
        f.writeframes(ints.tobytes())
    wave_, rate = load_audio(path)
    expected = ((ints.T.astype(np.float64) - offset) / scale).astype(np.float32)
    assert rate == 24000 and wave_.dtype == torch.float32 and tuple(wave_.shape) == (channels, n)
    np.testing.assert_array_equal(wave_.numpy(), expected)
    assert tuple(load_audio(path, 16000, channels=2)[0].shape) == (2, 2000)
