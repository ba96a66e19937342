"""Drop-in at diffusers' own sizes and lookups: the size rule comes from the pipeline's VAE (checked against
diffusers' and ltx-core's decoders), our classes resolve on `diffusers.pipelines`, `components` lists what was
passed in (as diffusers' pipelines), and folders without a text encoder load as before. diffusers' own LTX-2
tests run on our classes in CI (`bash ../shared/peer-diffusers/run.sh`, in `.ci/run`)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import AutoencoderKLLTX2Video

from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2ICLoRAPipeline, LTX2Scheduler, MultimodalGuider
from diffusers_ltx2.factory import TINY_CLIP
from diffusers_ltx2.pipelines.validation import min_latent_size, min_resolution

RUN = dict(num_frames=9, num_inference_steps=1, frame_rate=24.0)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _with_decoder_padding(vae, mode: str):
    config = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    other = AutoencoderKLLTX2Video(**dict(config, decoder_spatial_padding_mode=mode))
    other.load_state_dict(vae.state_dict())
    return other.eval()


def _decodes(decode, channels: int, size: int) -> bool:
    try:
        with torch.no_grad():
            decode(torch.randn(1, channels, 2, size, size, generator=_gen()))
    except RuntimeError as exc:
        assert "Padding size should be less than" in str(exc)
        return False
    return True


@pytest.mark.parametrize("mode,expected", [("reflect", 2), ("zeros", 1)])
def test_min_latent_size_is_where_diffusers_decoder_starts_to_work(tiny_components, mode, expected):
    vae = _with_decoder_padding(tiny_components["vae"], mode)
    channels = vae.config.latent_channels
    assert min_latent_size(vae.decoder) == expected
    assert _decodes(vae.decode, channels, expected)
    if expected > 1:
        assert not _decodes(vae.decode, channels, expected - 1)
    assert min_latent_size(vae.encoder) == 1  # the encoder pads with zeros
    assert min_resolution(vae) == 32 * expected and min_resolution(vae, decode=False) == 32


def test_official_decoder_defaults_need_two_latent_pixels():
    """ltx-core's decoder configurator defaults to reflect padding (what released checkpoints use): the rule reads
    2 latent pixels off it, and the official decoder itself fails on 1 and decodes 2."""
    from ltx_core.model.video_vae.model_configurator import VideoDecoderConfigurator

    decoder = VideoDecoderConfigurator.from_config(
        {"vae": {"latent_channels": 16, "decoder_base_channels": 16, "timestep_conditioning": False}})
    assert min_latent_size(decoder) == 2
    assert _decodes(decoder, 16, 2) and not _decodes(decoder, 16, 1)


def test_full_size_ltx2_vae_minimum_is_64_when_decoding():
    # diffusers' defaults are the LTX-2 video VAE's layers (decoder reflect, encoder zeros); its conversion script
    # sets the 32x / 8x ratios explicitly, as ours does
    with torch.device("meta"):
        vae = AutoencoderKLLTX2Video(spatial_compression_ratio=32, temporal_compression_ratio=8)
    assert vae.config.decoder_spatial_padding_mode == "reflect"
    assert min_resolution(vae) == 64 and min_resolution(vae, decode=False, encode=True) == 32


def test_diffusers_test_vae_allows_their_32px_clips():
    """The VAE of diffusers' LTX-2 pipeline tests: 2x compression, so 32x32 clips are 16x16 latents."""
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), decoder_block_out_channels=(8,),
        layers_per_block=(1,), decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True,),
        decoder_spatio_temporal_scaling=(True,), decoder_inject_noise=(False, False), downsample_type=("spatial",),
        upsample_residual=(False,), upsample_factor=(1,), timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False,
    )
    assert min_resolution(vae) == 4 and min_resolution(vae, decode=False) == 2


def test_pipeline_size_check_follows_its_vae(tiny_components):
    pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), **tiny_components)
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match=r"height must be at least 64 \(two latent pixels\), got 32"):
        pipe("a cat", height=32, width=64, generator=_gen(), output_type="np", **RUN)
    assert not calls
    latent = pipe("a cat", height=32, width=32, generator=_gen(), output_type="latent", **RUN)  # nothing decoded
    assert latent.frames.shape[-2:] == (1, 1)
    pipe.vae = _with_decoder_padding(pipe.vae, "zeros")  # a decoder that takes 1-pixel latents: 32 px decode
    out = pipe("a cat", height=32, width=32, generator=_gen(), output_type="np", **RUN)
    assert out.frames.shape == (1, 9, 32, 32, 3)


_LOOKUP = textwrap.dedent("""
    import sys
    {first}
    import diffusers.pipelines
    import diffusers_ltx2
    from diffusers.pipelines.ltx2 import LTX2Pipeline
    from diffusers.utils.source_code_parsing_utils import ReturnNameVisitor

    for name in ("LTX2AudioVideoPipeline", "LTX2ICLoRAPipeline", "LTX2TwoStagePipeline", "LTX2ICLoRATwoStagePipeline"):
        assert getattr(diffusers.pipelines, name) is getattr(diffusers_ltx2, name), name
    names = []
    for cls in (diffusers_ltx2.LTX2AudioVideoPipeline, LTX2Pipeline):
        visitor = ReturnNameVisitor()
        visitor.visit(visitor.get_ast_tree(cls=cls))
        names.append(visitor.return_names)
    print(names[0] == names[1] and names[0][-4:])
""")


@pytest.mark.parametrize("first", ["import diffusers_ltx2", "import diffusers", "import diffusers.pipelines", ""])
def test_pipelines_resolve_on_diffusers_pipelines(first):
    """diffusers' `encode_prompt` isolation test finds the class on `diffusers.pipelines` and maps
    `encode_prompt`'s outputs by its return names: both work whichever is imported first."""
    result = subprocess.run([sys.executable, "-c", _LOOKUP.format(first=first)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(
        ["prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask"])


def test_components_are_what_was_passed(tiny_components):
    comps = dict(tiny_components, scheduler=LTX2Scheduler())
    pipe = LTX2AudioVideoPipeline(**comps)
    assert set(pipe.components) == set(comps)
    assert isinstance(pipe.guider, MultimodalGuider)  # the default guider is there, just not listed
    custom = MultimodalGuider(video=dict(cfg=2.0))
    for guider in (custom, None):
        withg = LTX2AudioVideoPipeline(**comps, guider=guider)
        assert set(withg.components) == set(comps) | {"guider"} and withg.components["guider"] is guider
        assert LTX2ICLoRAPipeline(**withg.components).guider is guider
        assert LTX2ICLoRAPipeline.from_pipe(withg).guider is guider
    pipe.guider = custom  # assigned later: listed from then on
    assert pipe.components["guider"] is custom
    rebuilt = LTX2ICLoRAPipeline.from_pipe(LTX2AudioVideoPipeline(**comps))
    assert isinstance(rebuilt.guider, MultimodalGuider) and "guider" not in rebuilt.components


@pytest.mark.parametrize("index_entry", ["null", "missing"])
def test_folder_without_text_encoder_loads_it_as_none(tiny_components, tmp_path, index_entry):
    with_gemma = LTX2AudioVideoPipeline(**tiny_components, scheduler=LTX2Scheduler())
    embeds, mask, _, _ = with_gemma.encode_prompt("a cat", do_classifier_free_guidance=False, max_sequence_length=16)
    comps = dict(tiny_components, scheduler=LTX2Scheduler(), text_encoder=None, tokenizer=None, guider=None)
    LTX2AudioVideoPipeline(**comps).save_pretrained(tmp_path)
    if index_entry == "missing":
        index_file = tmp_path / "model_index.json"
        index = json.loads(index_file.read_text())
        del index["text_encoder"], index["tokenizer"]
        index_file.write_text(json.dumps(index))
    pipe = LTX2AudioVideoPipeline.from_pretrained(tmp_path)
    assert pipe.text_encoder is None and pipe.tokenizer is None
    assert set(pipe.components) >= {"text_encoder", "tokenizer"}
    out = pipe(prompt_embeds=embeds, prompt_attention_mask=mask, generator=_gen(), output_type="latent",
               **dict(TINY_CLIP, num_inference_steps=1))
    assert torch.isfinite(out.frames).all()


def test_a_video_does_not_depend_on_the_others_in_its_batch(tiny_pipe):
    """diffusers' `test_inference_batch_single_identical`: with the recommended guidance (rescale 0.7) video 0 of
    a batch equals the same video generated alone."""
    run = dict(TINY_CLIP, output_type="latent", num_inference_steps=2, max_sequence_length=16,
               guider=MultimodalGuider())  # recommended dials: rescale 0.7 on both modalities
    alone = tiny_pipe("a robot dancing", generator=_gen(0), **run)
    batch = tiny_pipe(["a robot dancing", 100 * "very long "], generator=[_gen(0), _gen(1)], **run)
    torch.testing.assert_close(batch.frames[:1], alone.frames, rtol=0, atol=1e-5)
    torch.testing.assert_close(batch.audio[:1], alone.audio, rtol=0, atol=1e-5)


# -- diffusers' LTX2VideoCondition / image-to-video code with only the import changed --------------------------------
OFF = dict(guidance_scale=1.0, stg_scale=0.0, modality_scale=1.0, guidance_rescale=0.0, audio_guidance_scale=1.0,
           audio_stg_scale=0.0, audio_modality_scale=1.0, audio_guidance_rescale=0.0)


def _first_transformer_inputs(pipe):
    seen = []
    keys = ("hidden_states", "audio_hidden_states", "timestep", "video_coords")
    handle = pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append({k: kwargs[k].clone() for k in keys}), with_kwargs=True)
    return seen, handle


def _same_call(pipe, diffusers_pipe, **kwargs):
    """The same call on both with guidance off and the same sigmas (diffusers' flow-match scheduler unshifted);
    returns each output and its first transformer inputs."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    diffusers_pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    pipe.scheduler.set_timesteps(3, num_tokens=1)
    sigmas = pipe.scheduler.sigmas.clone()
    call = dict(prompt="a cat", negative_prompt="", output_type="latent", max_sequence_length=1024, **OFF, **kwargs)
    results = []
    for p, s in ((pipe, dict(sigmas=sigmas.tolist())), (diffusers_pipe, dict(sigmas=sigmas[:-1].tolist(),
                                                                            num_inference_steps=3))):
        seen, handle = _first_transformer_inputs(p)
        out = p(generator=_gen(), **call, **s)
        handle.remove()
        results.append((out, seen[0]))
    return results


@torch.no_grad()
def test_diffusers_video_conditions_give_diffusers_latents(tiny_components):
    """`LTX2AudioVideoPipeline(conditions=[LTX2VideoCondition(...)])` = diffusers' `LTX2ConditionPipeline`: the same
    noised initial tokens (first-frame replacement, appended keyframes at latent index k -> pixel frame 8(k-1)+1,
    negative index from the last latent frame, CRF 33 on images, clips cut to fit), the same per-token timesteps
    and positions; and the same latents where both denoise alike (conditions at strength 1 on the first latent
    frame). They part where diffusers leaves ltx-core 1.0.0 (which ours follows; see the parity tests): diffusers
    narrows a one-frame keyframe's time box to one pixel frame, and converts a partially held token's velocity with
    the step's sigma instead of its own timestep."""
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2ConditionPipeline, LTX2VideoCondition

    ours = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), **tiny_components)
    theirs = LTX2ConditionPipeline(scheduler=LTX2Scheduler(), **tiny_components)
    clip = dict(TINY_CLIP, num_frames=17)  # 3 latent frames
    h, w = clip["height"], clip["width"]
    rng = np.random.default_rng(0)
    img = PIL.Image.fromarray(rng.integers(0, 256, (h + 16, w + 8, 3), dtype=np.uint8))  # resized + cropped
    video = torch.from_numpy(rng.integers(0, 256, (13, 3, h, w), dtype=np.uint8))  # cut to 9 frames at index 1
    cases = [
        ([LTX2VideoCondition(img)], True),
        ([LTX2VideoCondition(video[:9].float(), index=0, strength=1.0)], True),  # 0-255 floats, diffusers' scale
        ([LTX2VideoCondition(img, index=0, strength=0.6, crf=0)], False),
        ([LTX2VideoCondition(img, index=-1, strength=0.7), LTX2VideoCondition(img, index=0)], False),
        ([LTX2VideoCondition(video, index=1, strength=0.9)], False),
    ]
    for conditions, whole_run in cases:
        (a, a_in), (b, b_in) = _same_call(ours, theirs, conditions=conditions, **clip)
        for key in ("hidden_states", "audio_hidden_states"):
            torch.testing.assert_close(a_in[key], b_in[key], rtol=0, atol=1e-5)
        torch.testing.assert_close(a_in["timestep"].expand_as(b_in["timestep"]).float(), b_in["timestep"].float(),
                                   rtol=0, atol=1e-3)
        n = 3 * (h // 32) * (w // 32)  # the clip's own tokens; appended keyframes follow
        torch.testing.assert_close(a_in["video_coords"][:, :, :n], b_in["video_coords"][:, :, :n], rtol=0, atol=0)
        torch.testing.assert_close(a_in["video_coords"][..., 0], b_in["video_coords"][..., 0], rtol=0, atol=0)
        if whole_run:
            torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=2e-5)
            torch.testing.assert_close(a.audio, b.audio, rtol=0, atol=2e-5)


@torch.no_grad()
def test_diffusers_image_to_video_code_runs_with_the_import_changed(tiny_components):
    """diffusers' `LTX2ImageToVideoPipeline(image=PIL)` re-compresses at the model's CRF (33) and holds the first
    latent frame at the encoded image: ours gives the same first latent frame (same size: both resizes are
    the identity), and `image_crf=0` turns the re-compression off in both."""
    from diffusers.pipelines.ltx2.pipeline_ltx2_image2video import LTX2ImageToVideoPipeline

    ours = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), **tiny_components)
    theirs = LTX2ImageToVideoPipeline(scheduler=LTX2Scheduler(), **tiny_components)
    h, w = TINY_CLIP["height"], TINY_CLIP["width"]
    img = PIL.Image.fromarray(np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8))
    firsts = []
    for kwargs in ({}, dict(image_crf=0)):
        (a, _), (b, _) = _same_call(ours, theirs, image=img, **kwargs, **TINY_CLIP)
        torch.testing.assert_close(a.frames[:, :, :1], b.frames[:, :, :1], rtol=0, atol=1e-5)
        firsts.append(a.frames[:, :, :1])
    assert (firsts[0] - firsts[1]).abs().max() > 1e-4  # the CRF changed the encoded image


def test_diffusers_condition_errors(tiny_pipe):
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
    from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2ReferenceCondition

    img = PIL.Image.new("RGB", (64, 64))
    calls = []
    tiny_pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    for conditions, match in (
        ([LTX2VideoCondition(img, index=2)], "past the clip's 2 latent frames"),
        ([LTX2VideoCondition(np.zeros((64, 64, 3), np.float32))], "uint8"),  # CRF on floats, as diffusers
        ([LTX2ReferenceCondition(torch.rand(9, 3, 64, 64))], "LTX2ICLoRAPipeline"),
    ):
        with pytest.raises(ValueError, match=match):
            tiny_pipe("a cat", conditions=conditions, generator=_gen(), num_inference_steps=1, output_type="latent",
                      **dict(TINY_CLIP, num_frames=9))
    assert not calls


@torch.no_grad()
def test_a_single_diffusers_condition_needs_no_list(tiny_pipe):
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

    img = PIL.Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    run = dict(num_inference_steps=1, output_type="latent", **TINY_CLIP)
    single = tiny_pipe("a cat", conditions=LTX2VideoCondition(img, index=1, strength=0.8), generator=_gen(), **run)
    listed = tiny_pipe("a cat", conditions=[LTX2VideoCondition(img, index=1, strength=0.8)], generator=_gen(), **run)
    torch.testing.assert_close(single.frames, listed.frames, rtol=0, atol=0)
