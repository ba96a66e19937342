"""Hostile and unusual input files: what the container claims is bounded before anything is decoded, decoded
values are checked, every image mode keeps its true range, and every parse of a file we did not write fails as
a `ValueError` naming the file (one line, exit 2 on the command line) - never a RecursionError, a
DecompressionBombError or gigabytes of allocation.

Every file here is written by PyAV (FFmpeg) or Pillow, or crafted byte by byte where no tool would write it.
"""

from __future__ import annotations

import struct

import av
import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import save_file

import diffusers_ltx2.media.audio as media_audio
from diffusers_ltx2.cli import main
from diffusers_ltx2.conditioning import AudioCondition, TemporalRegion, VideoCondition
from diffusers_ltx2.conditioning.frames import as_frames
from diffusers_ltx2.media import load_audio, load_image, pil_to_rgb
from diffusers_ltx2.pipelines.images import image_list
from media_files import (
    frame_colours, png_header_only, tone, with_wav_rate, write_audio, write_float_wav, write_image_pyav, write_video,
)

DEEP = "[" * 100_000 + "]" * 100_000  # ~200 KB of JSON nested 100000 deep


# ----------------------------------------------------------------------------------- audio


@pytest.fixture()
def wav(tmp_path):
    """A real 1 s 48 kHz stereo 16-bit WAV (192 KB) written by PyAV."""
    return write_audio(tmp_path / "tone.wav", tone(1.0, 48000), 48000)


@pytest.mark.parametrize("claimed", [2_000_000_000, 1, 999, 768_001])
def test_a_wav_header_claiming_an_impossible_rate_is_refused_before_decoding(wav, tmp_path, monkeypatch, claimed):
    crafted = with_wav_rate(wav, tmp_path / f"claims_{claimed}.wav", claimed)
    with av.open(crafted) as container:  # FFmpeg believes the header
        assert container.streams.audio[0].codec_context.sample_rate == claimed
    monkeypatch.setattr(media_audio, "_frame_samples", lambda frame: pytest.fail("samples were decoded"))
    for attempt in (lambda: load_audio(crafted), lambda: AudioCondition(crafted),
                    lambda: load_audio(crafted, 16000, duration=0.5)):
        with pytest.raises(ValueError, match=rf"claims_{claimed}.wav: .*sample rate of {claimed} Hz, outside "
                                             r"\[1000, 768000\]"):
            attempt()


@pytest.mark.parametrize("rate", [1000, 8000, 768_000])
def test_rates_at_the_edges_of_the_range_still_load(wav, tmp_path, rate):
    crafted = with_wav_rate(wav, tmp_path / f"at_{rate}.wav", rate)
    waveform, got = load_audio(crafted)
    assert got == rate and waveform.shape == (2, 48000)  # same samples, another claimed rate


def test_decoded_length_is_bounded_by_what_the_container_states_and_by_what_decodes(wav, monkeypatch):
    monkeypatch.setattr(media_audio, "MAX_DECODED_SAMPLES", 2 * 24000)  # 0.5 s of this stereo 48 kHz file
    with pytest.raises(ValueError, match=r"tone.wav: the audio from 0 s on lasts 1 s: it holds more than 48000"):
        load_audio(wav)
    waveform, _ = load_audio(wav, duration=0.4)  # a window under the bound is read
    assert waveform.shape == (2, 19200)
    waveform, _ = load_audio(wav, start_time=0.6)
    assert waveform.shape == (2, 19200)
    # a container that understates its length (or states none) is caught while decoding
    monkeypatch.setattr(media_audio, "_check_stream_bounds", lambda path, stream, *args: 2)
    with pytest.raises(ValueError, match="tone.wav: the audio from 0 s on decodes to more than 48000 samples"):
        load_audio(wav)


@pytest.mark.parametrize("codec", ["pcm_f32le", "pcm_f64le"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_wavs_with_nan_or_inf_samples_are_refused_naming_the_file(tmp_path, codec, bad):
    wave = tone(0.5, 16000)
    wave[1, 4000] = bad
    path = write_float_wav(tmp_path / "broken.wav", wave, 16000, codec)
    with av.open(path) as container:  # the value is really in the file
        decoded = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
        assert not np.isfinite(decoded).all()
    with pytest.raises(ValueError, match="broken.wav: the audio contains NaN or infinite samples"):
        load_audio(path)
    with pytest.raises(ValueError, match="broken.wav"):
        AudioCondition(path)


@pytest.mark.parametrize("codec", ["pcm_f32le", "pcm_f64le"])
def test_finite_float_wavs_load_as_written(tmp_path, codec):
    wave = tone(0.5, 16000) * 1.5  # floats may exceed [-1, 1]: kept, as FFmpeg decodes them
    path = write_float_wav(tmp_path / "fine.wav", wave, 16000, codec)
    waveform, rate = load_audio(path)
    assert rate == 16000
    np.testing.assert_array_equal(waveform.numpy(), wave.astype(np.float32))


# ----------------------------------------------------------------------------------- images


def _rgb(height=48, width=64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 4) % 256, (y * 5) % 256, (x + y) * 2 % 256], -1).astype(np.uint8)


def _grey16(height=48, width=64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return ((x * 1000 + y * 37) % 65536).astype(np.uint16)


def _write_pillow(path, image: PIL.Image.Image, **kwargs) -> str:
    image.save(path, **kwargs)
    return str(path)


def _pillow_cases():
    """(file name, writer, expected RGB from the values written) for files Pillow writes."""
    rgb, grey16 = _rgb(), _grey16()
    grey8 = rgb[..., 0]
    alpha = rgb[..., 1]
    palette = np.array([[10, 20, 30], [200, 100, 0], [0, 255, 128], [255, 255, 255]], np.uint8)
    indices = (rgb[..., 0] // 64).astype(np.uint8)

    def paletted():
        image = PIL.Image.fromarray(indices, "P")
        image.putpalette(palette.flatten().tolist())
        return image

    def three(grey):
        return np.repeat(grey[..., None], 3, axis=-1)

    return [
        ("grey8.png", lambda: PIL.Image.fromarray(grey8), three(grey8)),
        ("grey16.png", lambda: PIL.Image.fromarray(grey16), three(np.round(grey16 / 257).astype(np.uint8))),
        ("grey16.tif", lambda: PIL.Image.fromarray(grey16), three(np.round(grey16 / 257).astype(np.uint8))),
        ("grey_alpha.png", lambda: PIL.Image.fromarray(np.stack([grey8, alpha], -1), "LA"), three(grey8)),
        ("rgba.png", lambda: PIL.Image.fromarray(np.dstack([rgb, alpha])), rgb),
        ("palette.png", paletted, palette[indices]),
        ("bilevel.png", lambda: PIL.Image.fromarray(grey8 > 127),
         three(np.where(grey8 > 127, 255, 0).astype(np.uint8))),
        ("float.tif", lambda: PIL.Image.fromarray(grey8.astype(np.float32) / 255), three(grey8)),
    ]


@pytest.mark.parametrize("name,make,expected", _pillow_cases(), ids=[c[0] for c in _pillow_cases()])
def test_images_written_by_pillow_keep_their_true_range(tmp_path, name, make, expected):
    path = _write_pillow(tmp_path / name, make())
    got = load_image(path)
    assert got.shape == expected.shape and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


def test_a_cmyk_jpeg_written_by_pillow_comes_back_as_its_rgb(tmp_path):
    rgb = _rgb()
    path = _write_pillow(tmp_path / "cmyk.jpg", PIL.Image.fromarray(rgb).convert("CMYK"), quality=95)
    with PIL.Image.open(path) as image:
        assert image.mode == "CMYK"
    got = load_image(path).astype(int)
    assert np.abs(got - rgb).mean() < 4 and np.abs(got - rgb).max() < 64  # JPEG's loss, not a colour shift


@pytest.mark.parametrize("pix_fmt", ["gray", "gray16be", "ya8", "ya16be", "rgba", "rgb48be", "rgba64be", "monob"])
def test_pngs_written_by_ffmpeg_equal_ffmpegs_own_rgb_decode(tmp_path, pix_fmt):
    path = write_image_pyav(tmp_path / f"{pix_fmt}.png", _rgb(), pix_fmt)
    with av.open(path) as container:  # the peer: FFmpeg decodes its own file to 8-bit RGB
        frame = next(container.decode(video=0))
        expected = frame.to_ndarray(format="rgb24").astype(int)
    got = load_image(path).astype(int)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1  # 16 -> 8 bit: rounding (ours) vs FFmpeg's truncation
    if pix_fmt == "gray16be":
        assert got.max() < 255 and got.std() > 20  # not the pure white of convert("RGB")


def test_16_bit_pil_images_given_directly_keep_their_range():
    grey16 = _grey16()
    expected = np.repeat(np.round(grey16 / 257).astype(np.uint8)[..., None], 3, axis=-1)
    image = PIL.Image.fromarray(grey16)
    assert image.mode == "I;16"
    np.testing.assert_array_equal(pil_to_rgb(image), expected)
    np.testing.assert_array_equal(as_frames(image, "VideoCondition")[0], expected)
    np.testing.assert_array_equal(np.asarray(image_list(image)[0][0][0]), expected)  # the pipeline's image=
    as_int32 = PIL.Image.fromarray(grey16.astype(np.int32))  # mode "I": Pillow's 32-bit home of 16-bit data
    np.testing.assert_array_equal(pil_to_rgb(as_int32), expected)


def test_images_without_a_known_range_are_refused():
    with pytest.raises(ValueError, match="img: a 32-bit integer image .* only 16-bit data"):
        pil_to_rgb(PIL.Image.fromarray(np.full((4, 4), 70000, np.int32)), "img")
    with pytest.raises(ValueError, match="img: a floating-point image .* \\[0, 1\\]"):
        pil_to_rgb(PIL.Image.fromarray(np.full((4, 4), 3.0, np.float32)), "img")


def test_a_png_header_claiming_100000_by_100000_pixels_is_a_value_error_naming_the_file(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(PIL.Image.DecompressionBombError):  # what Pillow itself does with it
        PIL.Image.open(bomb)
    with pytest.raises(ValueError, match="bomb.png.*decompression bomb"):
        load_image(bomb)
    with pytest.raises(ValueError, match="bomb.png"):
        VideoCondition(bomb, frame_index=0)


# ----------------------------------------------------------------------------------- JSON nested 100000 deep


def _safetensors_with_header(path, header: str) -> str:
    raw = header.encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    return str(path)


@pytest.fixture()
def deep_header(tmp_path):
    return _safetensors_with_header(tmp_path / "deep_header.safetensors",
                                    '{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "z": ' + DEEP + "}")


@pytest.fixture()
def deep_config(tmp_path):
    path = str(tmp_path / "deep_config.safetensors")
    save_file({"model.diffusion_model.x": torch.zeros(2)}, path, metadata={"config": DEEP, "model_version": "2.0"})
    return path


def test_a_safetensors_header_nested_100000_deep_is_a_value_error(deep_header):
    from diffusers_ltx2 import LTX2AudioVideoPipeline
    from diffusers_ltx2.conversion.streaming import read_header
    from diffusers_ltx2.loaders.identity import read_safetensors_metadata

    for attempt in (lambda: read_header(deep_header), lambda: read_safetensors_metadata(deep_header),
                    lambda: LTX2AudioVideoPipeline.from_single_file(deep_header, progress=False)):
        with pytest.raises(ValueError, match="deep_header.safetensors.*nested too deeply"):
            attempt()


def test_config_metadata_nested_100000_deep_is_a_value_error(deep_config):
    from diffusers_ltx2 import LTX2AudioVideoPipeline
    from diffusers_ltx2.conversion.plan import inspect_checkpoint
    from diffusers_ltx2.conversion.upsampler import read_upsampler_config

    for attempt in (lambda: inspect_checkpoint(deep_config),
                    lambda: LTX2AudioVideoPipeline.from_single_file(deep_config, progress=False)):
        with pytest.raises(ValueError, match="deep_config.safetensors: 'config' metadata: .*nested too deeply"):
            attempt()
    upsampler = deep_config.replace("deep_config", "deep_upsampler")
    save_file({"initial_conv.weight": torch.zeros(2), "final_conv.weight": torch.zeros(2)}, upsampler,
              metadata={"config": DEEP})
    with pytest.raises(ValueError, match="deep_upsampler.safetensors: 'config' metadata: .*nested too deeply"):
        read_upsampler_config(upsampler)


def test_lora_metadata_nested_100000_deep_is_a_value_error(tiny_pipe, tmp_path):
    from diffusers_ltx2.conversion.lora import ADAPTER_METADATA_KEY, normalize_lora

    state = {"diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 32),
             "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 2)}
    with pytest.raises(ValueError, match=f"LoRA metadata {ADAPTER_METADATA_KEY}.*nested too deeply"):
        normalize_lora(state, {ADAPTER_METADATA_KEY: DEEP})
    path = str(tmp_path / "deep_lora.safetensors")
    save_file(state, path, metadata={ADAPTER_METADATA_KEY: DEEP})
    with pytest.raises(ValueError, match="deep_lora.safetensors: LoRA metadata .*nested too deeply"):
        tiny_pipe.load_lora_weights(path, adapter_name="deep")
    assert not tiny_pipe.get_list_adapters()


@pytest.mark.parametrize("where", ["model_index.json", "transformer/config.json", "vae/config.json"])
def test_model_folder_json_nested_100000_deep_is_a_value_error_before_loading(tiny_pipe, tmp_path, monkeypatch,
                                                                             where):
    import diffusers

    from diffusers_ltx2 import LTX2AudioVideoPipeline

    folder = tmp_path / "pipe"
    tiny_pipe.save_pretrained(folder)
    (folder / where).write_text(DEEP)
    original = diffusers.DiffusionPipeline.from_pretrained.__func__
    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained",
                        classmethod(lambda cls, *a, **k: pytest.fail("diffusers parsed the folder")))
    with pytest.raises(ValueError, match=f"{where}: the JSON is nested too deeply"):
        LTX2AudioVideoPipeline.from_pretrained(folder)
    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", classmethod(original))


# ----------------------------------------------------------------------------------- arguments


def test_non_finite_or_zero_arguments_fail_before_any_model_runs(tiny_pipe, monkeypatch):
    monkeypatch.setattr(tiny_pipe.transformer, "forward", lambda *a, **k: pytest.fail("the model ran"))
    clip = np.zeros((17, 64, 64, 3), np.uint8)
    for rate in (0, -24, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match="frame_rate must be a finite number of frames per second > 0"):
            tiny_pipe.extend(clip, 8, overlap_frames=8, frame_rate=rate, prompt="p")
    for kwargs in (dict(ramp_s=float("inf")), dict(ramp_s=float("nan")), dict(end_s=float("inf"))):
        args = dict(start_s=0.1, end_s=0.5) | kwargs
        with pytest.raises(ValueError, match="must be a number of seconds \\(finite\\)"):
            TemporalRegion(**args)


# ----------------------------------------------------------------------------------- the command line


@pytest.fixture()
def cli_workspace(tmp_path, monkeypatch, wav):
    """A fake pipeline folder and hostile files; loading a model fails the test."""
    import diffusers

    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text('{"_class_name": "LTX2AudioVideoPipeline"}')
    deep_model = tmp_path / "deep_model"
    (deep_model / "transformer").mkdir(parents=True)
    (deep_model / "model_index.json").write_text('{"_class_name": "LTX2AudioVideoPipeline"}')
    (deep_model / "transformer" / "config.json").write_text(DEEP)
    png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    with_wav_rate(wav, tmp_path / "ghz.wav", 2_000_000_000)
    with_wav_rate(wav, tmp_path / "one_hz.wav", 1)
    wave = tone(0.5, 16000)
    wave[0, 10] = np.nan
    write_float_wav(tmp_path / "nan.wav", wave, 16000)
    _safetensors_with_header(tmp_path / "deep.safetensors", '{"z": ' + DEEP + "}")
    write_video(tmp_path / "clip.mp4", frame_colours(17, 64, 64), audio=tone(17 / 24, 48000))
    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained",
                        classmethod(lambda *a, **k: pytest.fail("a model was loaded before the checks")))
    return tmp_path


GENERATE = ["generate", "--model", "model", "--prompt", "a cat", "--output", "out.mp4", "--num-frames", "9",
            "--height", "64", "--width", "64"]


@pytest.mark.parametrize("argv,message", [
    (GENERATE + ["--image", "bomb.png"], "bomb.png"),
    (GENERATE + ["--audio", "ghz.wav"], "ghz.wav: the audio stream states a sample rate of 2000000000 Hz"),
    (GENERATE + ["--audio", "one_hz.wav"], "one_hz.wav: the audio stream states a sample rate of 1 Hz"),
    (GENERATE + ["--audio", "nan.wav"], "nan.wav: the audio contains NaN or infinite samples"),
    (GENERATE[:2] + ["deep_model"] + GENERATE[3:], "config.json: the JSON is nested too deeply"),
    (["convert", "deep.safetensors", "out", "--no-progress"], "deep.safetensors: safetensors header"),
    (["retake", "--input", "clip.mp4", "--start", "0", "--end", "0.2", "--ramp", "inf", "--model", "model",
      "--output", "out.mp4", "--prompt", "p"], "--ramp: must be a finite number >= 0, got inf"),  # the flag named
    (["extend", "--input", "clip.mp4", "--frames", "8", "--overlap", "8", "--overlap-strength", "nan",
      "--model", "model", "--output", "out.mp4", "--prompt", "p"], "--overlap-strength: must be in [0, 1], got nan"),
])
def test_hostile_files_and_arguments_are_one_line_exit_2(cli_workspace, capsys, argv, message):
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (cli_workspace / "out.mp4").exists() and not (cli_workspace / "out").exists()
