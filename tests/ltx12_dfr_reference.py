"""ltx-pipelines 1.2 `DFRPipeline`'s stages on the tiny official 2.5 set, run in a child process on the official
1.2 sources (as `ltx12_reference.py`): `python ltx12_dfr_reference.py request.json`; `run(**kwargs)` from tests.

The child replays `DFRPipeline.__call__` stage by stage with its own blocks - `VideoGeneratedKeyframeSlots`,
`VideoConditionByKeyframeIndex`, `VideoConditionByReferenceLatent`, `GaussianNoiser` on one generator, Euler for
stages 1 and 2, `euler_ancestral_denoising_loop` (eta 0.5, seed `seed + 1000 * round + tile`) for the video-only
tiles, `upsample_video`, `dfr_layout.tile_ranges` / `stitch_tile_latents` and the carry-forward merge - with
its ledger replaced by the tiny files (latent channels 8) and fp32 latents between steps (1.2 rounds them to
bfloat16, `model_dtype`; ours stay fp32, so do these). Images (`images=`: `[path, frame_idx, strength, crf]`) go
through 1.2's own `combined_image_conditionings` (its image loader, CRF from `detect_params` of the VAE file as
`ImageConditioner.resolve_crf`, float32 pixels where 1.2 loads bfloat16) before the slots, as `DFRPipeline`
orders them, and in the round through `DFRPipeline`'s tile rule (unscaled frame index, every image on tile 0).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ltx12_reference as R


def run(timeout: int = 1800, **kwargs) -> dict:
    """`dfr_stages(**kwargs)` in a child process on ltx-pipelines 1.2 (`ltx12_reference.run_child`)."""
    return R.run_child(Path(__file__), kwargs, "ltx-pipelines 1.2 DFR stages", timeout)


def dfr_stages(files: dict, inputs: str, out: str, height: int, width: int, frames: int, fps: float, seed: int,
               video_channels: int, audio_channels: int, audio_mel_bins: int, reference: bool = True,
               stage_loras: list = (), detailing_lora: list | None = None, rounds: int = 1, images: list = ()) -> dict:
    """The stages on the tiny set. `stage_loras`: `[path, strength]` LoRAs fused in every stage (1.2's user +
    distilled LoRAs); `detailing_lora`: `[path, strength]` added in stage 2 only (1.2's `--detailing-lora`, stage 2
    built by `DiffusionStage.with_loras`), its reference at 1.2's `_detailing_downscale_factor` of the file (it
    implies `reference`); `rounds`: temporal rounds run (0 or 1)."""
    from functools import partial

    import torch
    from ltx_core.components.diffusion_steps import EulerAncestralDiffusionStep, EulerDiffusionStep
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
    from ltx_core.conditioning import (
        VideoConditionByReferenceLatent,
        VideoGeneratedKeyframeSlots,
    )
    from ltx_core.loader import SingleGPUModelBuilder
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator, upsample_video
    from ltx_core.model.video_vae import VAE_ENCODER_COMFY_KEYS_FILTER, VideoEncoderConfigurator
    from ltx_core.tools import AudioLatentTools, VideoLatentTools
    from ltx_core.types import AudioLatentShape, VideoLatentShape, VideoPixelShape
    from ltx_pipelines import dfr_pipeline as P
    from ltx_pipelines.dfr_layout import remap_positions_to_local, resolve_canvas, stitch_tile_latents, tile_ranges
    from ltx_pipelines.utils.args import ImageConditioningInput
    from ltx_pipelines.utils.blocks import _build_state
    from ltx_pipelines.utils.constants import detect_params
    from ltx_pipelines.utils.helpers import combined_image_conditionings
    from ltx_pipelines.utils.constants import DISTILLED_SIGMAS, STAGE_2_DISTILLED_SIGMAS
    from ltx_pipelines.utils.denoisers import SimpleDenoiser
    from ltx_pipelines.utils.samplers import euler_ancestral_denoising_loop, euler_denoising_loop
    from ltx_pipelines.utils.types import ModalitySpec

    x = torch.load(inputs)
    noiser = GaussianNoiser(generator=torch.Generator().manual_seed(seed))
    x0 = R._transformer_x0(files["transformer"], loras=tuple(stage_loras))
    denoiser = SimpleDenoiser(x["v_pos"], x["a_pos"])

    def tools(h, w, n, rate):
        pixel = VideoPixelShape(batch=1, frames=n, height=h, width=w, fps=rate)
        v = VideoLatentTools(VideoLatentPatchifier(patch_size=1),
                             VideoLatentShape.from_pixel_shape(pixel, latent_channels=video_channels), rate)
        a = AudioLatentTools(AudioPatchifier(patch_size=1), AudioLatentShape.from_video_pixel_shape(
            pixel, channels=audio_channels, mel_bins=audio_mel_bins))
        return v, a

    def stage(sigmas, t, video_spec, audio_spec, stepper, loop, model=x0):
        v_state = _build_state(video_spec, t[0], noiser, torch.float32, torch.device("cpu"))
        a_state = None if audio_spec is None else _build_state(audio_spec, t[1], noiser, torch.float32,
                                                               torch.device("cpu"))
        v_state, a_state = loop(sigmas=sigmas, video_state=v_state, audio_state=a_state, stepper=stepper,
                                transformer=model, denoiser=denoiser)
        v_state = t[0].unpatchify(t[0].clear_conditioning(v_state))
        if a_state is not None:
            a_state = t[1].unpatchify(t[1].clear_conditioning(a_state))
        return v_state, a_state

    def build(path, configurator, ops=None):
        kw = {} if ops is None else {"model_sd_ops": ops}
        return SingleGPUModelBuilder(model_class_configurator=configurator, model_path=path, **kw).build(
            device=torch.device("cpu"), dtype=torch.float32).eval()

    encoder = build(files["video_vae_conv"], VideoEncoderConfigurator, VAE_ENCODER_COMFY_KEYS_FILTER)
    spatial = build(files["spatial_upsampler"], LatentUpsamplerConfigurator)
    temporal = build(files["temporal_upsampler"], LatentUpsamplerConfigurator)
    crf = detect_params(files["video_vae_conv"]).default_image_crf
    images = [ImageConditioningInput(p, f, s, crf if c is None else c) for p, f, s, c in images]
    result = {"crf": crf}
    frames, _, positions = resolve_canvas(frames)

    def image_conds(imgs, h, w):
        with torch.no_grad():
            return combined_image_conditionings(images=imgs, height=h, width=w, video_encoder=encoder,
                                                dtype=torch.float32, device=torch.device("cpu"))

    # stage 1: half resolution + keyframe slots
    s1 = DISTILLED_SIGMAS.to(torch.float32)
    half = tools(height // 2, width // 2, frames, fps)
    video, audio = stage(s1, half, ModalitySpec(context=x["v_pos"], conditionings=[
        *image_conds(images, height // 2, width // 2),
        VideoGeneratedKeyframeSlots(pixel_frame_indices=positions)]), ModalitySpec(context=x["a_pos"]),
        EulerDiffusionStep(), euler_denoising_loop)
    result["s1_video"], result["s1_audio"], result["s1_slots"] = video.latent, audio.latent, video.generated_keyframes
    base = video.latent[:1].clone()
    with torch.no_grad():
        up_slots = upsample_video(video.generated_keyframes, encoder, spatial)
        up_video = upsample_video(base, encoder, spatial)

    # stage 2: spatial detailing
    s2 = STAGE_2_DISTILLED_SIGMAS.to(torch.float32)
    conds = [*image_conds(images, height, width),
             VideoGeneratedKeyframeSlots(pixel_frame_indices=positions, initial_keyframes=up_slots)]
    x0_detailing = x0
    if detailing_lora is not None:
        x0_detailing = R._transformer_x0(files["transformer"], loras=(*map(tuple, stage_loras), tuple(detailing_lora)))
        conds.append(VideoConditionByReferenceLatent(
            latent=base, downscale_factor=P._detailing_downscale_factor(detailing_lora[0]), strength=1.0))
    elif reference:
        conds.append(VideoConditionByReferenceLatent(latent=base, downscale_factor=2, strength=1.0))
    full = tools(height, width, frames, fps)
    video, audio = stage(s2, full, ModalitySpec(context=x["v_pos"], conditionings=conds, noise_scale=s2[0].item(),
                                                initial_latent=up_video),
                         ModalitySpec(context=x["a_pos"], noise_scale=s2[0].item(), initial_latent=audio.latent),
                         EulerDiffusionStep(), euler_denoising_loop, model=x0_detailing)
    result["s2_video"], result["s2_audio"], result["s2_slots"] = video.latent, audio.latent, video.generated_keyframes

    if rounds == 0:
        torch.save(result, out)
        return {"ok": True}

    # temporal round 1 (DFRPipeline's loop body, round_idx = 1)
    carry_positions, carry = list(positions), video.generated_keyframes
    st = DISTILLED_SIGMAS[4:].to(torch.float32)
    round_idx = 1
    with torch.no_grad():
        video_latent = upsample_video(video.latent[:1], encoder, temporal)
    n2, rate = 2 * (frames - 1) + 1, 2 * fps
    seams = [2 * p for p in carry_positions]
    seam_to_index = {s: i for i, s in enumerate(seams)}
    cond_fps = min(rate, P._MAX_CONDITIONING_FPS)
    tiles = tile_ranges(seams, n2, 2 ** round_idx)
    tile_latents, slot_positions, slot_slices = [], [], []
    for tile_index, tile in enumerate(tiles):
        local_frames = (tile.latent_end_exclusive - tile.latent_start - 1) * 8 + 1
        tile_video = video_latent[:, :, tile.latent_start: tile.latent_end_exclusive]
        tile_imgs = images if tile.pixel_start == 0 else [  # DFRPipeline's rule, verbatim
            ImageConditioningInput(i.path, i.frame_idx - tile.pixel_start, i.strength, i.crf) for i in images
            if tile.pixel_start <= i.frame_idx <= tile.pixel_end]
        conds = image_conds(tile_imgs, height, width) if tile_imgs else []
        anchor_global = list(tile.anchor_kf_global)
        if anchor_global:
            anchors = torch.cat([carry[:, :, seam_to_index[p]: seam_to_index[p] + 1] for p in anchor_global], dim=2)
            conds.extend(P._keyframe_conditionings_from_latents(
                anchors, remap_positions_to_local(anchor_global, tile.pixel_start), strength=P._ANCHOR_KEYFRAME_STRENGTH))
        slot_global = list(tile.slot_kf_global)
        if slot_global:
            slot_local = remap_positions_to_local(slot_global, tile.pixel_start)
            conds.append(VideoGeneratedKeyframeSlots(
                pixel_frame_indices=slot_local, initial_keyframes=P._slot_initials_from_video(tile_video, slot_local, 8)))
        t = tools(height, width, local_frames, cond_fps)
        loop = partial(euler_ancestral_denoising_loop, noise_seed=seed + 1000 * round_idx + tile_index,
                       model_dtype=torch.float32)
        tile_state, _ = stage(st, t, ModalitySpec(context=x["v_pos"], conditionings=conds,
                                                  noise_scale=st[0].item(), initial_latent=tile_video), None,
                              EulerAncestralDiffusionStep(eta=P._TEMPORAL_ANCESTRAL_ETA), loop)
        tile_latents.append(tile_state.latent[:1])
        if slot_global:
            slot_positions.extend(slot_global)
            slot_slices.append(tile_state.generated_keyframes)
    result["r1_tiles"] = tile_latents
    result["r1_video"] = stitch_tile_latents(tile_latents, tiles)
    slot_latents = torch.cat(slot_slices, dim=2)
    first = {}
    for i, p in enumerate(slot_positions):
        first.setdefault(p, i)
    slot_positions = sorted(first)
    slot_latents = torch.cat([slot_latents[:, :, first[p]: first[p] + 1] for p in slot_positions], dim=2)
    result["r1_positions"], result["r1_keyframes"] = P._merge_carry_forward_keyframes(
        seams, carry, slot_positions, slot_latents)
    torch.save(result, out)
    return {"ok": True}


if __name__ == "__main__":
    R._child_setup()
    print(json.dumps(dfr_stages(**json.loads(Path(sys.argv[1]).read_text()))))
