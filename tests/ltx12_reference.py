"""The official ltx-core / ltx-pipelines 1.2.0 (LTX-2.5) as a test reference, run in a subprocess.

ltx-core 1.0.0 stays installed for the 2.0/2.3 references, so 1.2.0 (``../shared/ltx2-official-1.2.0``, see its
``SOURCE.md``) is imported only here, in a child process: ``run(op, **kwargs)`` starts
``python ltx12_reference.py request.json`` with 1.2's sources first on ``PYTHONPATH`` and returns the JSON it
prints. Tensors travel as ``.pt`` files named in the request.

Operations (the child side, ``_OPS``):

- ``build_set``: a tiny official LTX-2.5 file set written with 1.2's own configurators and random weights, one
  file per component with the release's key layout and ``config`` / ``model_version`` metadata (transformer with
  the text connectors, text encoder with the projection bundled, conv and diffusion video VAEs, audio VAE with
  the vocoder, duration head, spatial and temporal upscalers, a distilled LoRA).
- ``transformer`` / ``video_decoder`` / ``duration_head`` / ``embeddings``: load a component through 1.2's own
  builder and key operations (``SingleGPUModelBuilder`` + the SDOps its pipelines use) and run it on saved inputs.

Only the parts of 1.2 that import on this machine are used: no natten (1.2 falls back to eager neighborhood
attention), torchaudio stubbed as in ``ltx_reference`` (only the audio encoder's mel front-end imports it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OFFICIAL_12 = HERE.parent.parent / "shared" / "ltx2-official-1.2.0" / "packages"
if not OFFICIAL_12.is_dir():  # worktrees live next to /work/shared
    OFFICIAL_12 = Path("/work/shared/ltx2-official-1.2.0/packages")

#: file names of the tiny set (the release's names and folders, ``ltx-2.5-*``)
FILES = {
    "transformer": "diffusion_models/ltx-2.5-22b-dev-transformer-tiny.safetensors",
    "text_encoder": "text_encoders/gemma4-12b-with-proj-ltx-2.5-tiny.safetensors",
    "video_vae_diffusion": "vae/ltx-2.5-video-vae-tiny.safetensors",
    "video_vae_conv": "vae/ltx-2.5-video-vae-conv-tiny.safetensors",
    "audio_vae": "vae/ltx-2.5-audio-vae-tiny.safetensors",
    "spatial_upsampler": "latent_upscale_models/ltx-2.5-latent-spatial-upscaler-x2-tiny.safetensors",
    "temporal_upsampler": "latent_upscale_models/ltx-2.5-latent-temporal-upscaler-x2-tiny.safetensors",
    "distilled_lora": "loras/ltx-2.5-22b-distilled-lora-tiny.safetensors",
    "duration_head": "model_patches/ltx-2.5-duration-head-tiny.safetensors",
}


def run(op: str, timeout: int = 900, **kwargs) -> dict:
    """Run ``op`` in a child process on ltx-core 1.2.0; returns its JSON answer (raises with its stderr)."""
    return run_child(Path(__file__), {"op": op, **kwargs}, f"ltx-core 1.2.0 {op}", timeout)


def run_child(script: Path, request: dict, what: str, timeout: int) -> dict:
    """Run `script` with a JSON file of `request` as its argument in a child process that imports ltx-core /
    ltx-pipelines 1.2.0 (and this folder); returns the JSON of its last stdout line, or raises naming `what`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "request.json"
        path.write_text(json.dumps(request, default=str))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(OFFICIAL_12 / "ltx-core" / "src"), str(OFFICIAL_12 / "ltx-pipelines" / "src"), str(HERE)]
        )
        env.setdefault("OMP_NUM_THREADS", "1")
        proc = subprocess.run([sys.executable, str(Path(script).resolve()), str(path)], env=env,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{what} failed:\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


# ================================================================================================ child side


def _child_setup() -> None:
    import importlib.machinery
    import types

    import transformers  # noqa: F401  (before the stub: its torchaudio probe must see none)

    for name in ("torchaudio", "OpenImageIO"):  # OpenImageIO: ltx_pipelines' media decoding, unused here
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
            sys.modules[name] = stub
    import ltx_core

    assert "ltx2-official-1.2.0" in ltx_core.__file__, ltx_core.__file__  # never the installed 1.0.0


def _randomize(module, gen, scale: float = 0.2, zero_keyframes: bool = False) -> None:
    """Random parameters (statistics positive where they are divided by)."""
    import torch

    with torch.no_grad():
        for mod in module.modules():
            for name, p in list(mod._parameters.items()):
                if p is None:
                    continue
                value = torch.randn(p.shape, generator=gen) * scale
                if name == "keyframes_abs_pos_embedding" and zero_keyframes:
                    value.zero_()
                mod._parameters[name] = torch.nn.Parameter(value)
        for name, b in module.named_buffers():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "std-of-means":
                b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
            elif leaf == "mean-of-means":
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            elif leaf in ("mel_basis", "forward_basis", "inverse_basis"):
                b.copy_(torch.rand(b.shape, generator=gen) * 0.2)


def _meta(config: dict, **extra) -> dict:
    import official_configs as C

    meta = {"config": json.dumps(config), "model_version": C.MODEL_VERSION_25}
    meta.update(extra)
    return meta


def _save(path: Path, tensors: dict, metadata: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path), metadata=metadata)


def _build_transformer(folder: Path, gen, transformer_config: dict, zero_keyframes: bool) -> None:
    import official_configs as C
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator
    from ltx_core.text_encoders.gemma.embeddings_connector import (
        AudioEmbeddings1DConnectorConfigurator,
        Embeddings1DConnectorConfigurator,
    )

    metadata = {"config": {"transformer": transformer_config, "scheduler": C.SCHEDULER}}
    model = LTXModelConfigurator.from_metadata(metadata)
    _randomize(model, gen, zero_keyframes=zero_keyframes)
    sd = {f"model.diffusion_model.{k}": v for k, v in model.state_dict().items()}
    for name, conf in (("video", Embeddings1DConnectorConfigurator), ("audio", AudioEmbeddings1DConnectorConfigurator)):
        connector = conf.from_metadata(metadata)
        _randomize(connector, gen)
        prefix = f"model.diffusion_model.{name}_embeddings_connector."
        sd.update({prefix + k: v for k, v in connector.state_dict().items()})
    source = json.dumps({"gemma_version": C.GEMMA_VERSION_25})
    _save(folder / FILES["transformer"], sd, _meta(metadata["config"], encrypted_wandb_properties=C.MODEL_ID_25,
                                                    gemma_source_checkpoint=source))


def _raw_diffusion_decoder_key(key: str) -> str:
    """ltx-core module key -> the checkpoint's raw name (inverse of its loader's renames)."""
    return (key.replace("t_embedder.timestep_embedder.linear_1.", "t_embedder.mlp.0.")
            .replace("t_embedder.timestep_embedder.linear_2.", "t_embedder.mlp.2."))


def _build_video_vaes(folder: Path, gen) -> None:
    import torch

    import official_configs as C
    from ltx_core.model.video_vae.model_configurator import VideoDecoderConfigurator, VideoEncoderConfigurator

    # conv VAE: bare ``encoder.`` / ``decoder.`` / ``per_channel_statistics.`` keys (the split files' layout)
    meta = {"config": {"vae": C.VAE_25_CONV}}
    sd = {}
    for part, conf in (("encoder", VideoEncoderConfigurator), ("decoder", VideoDecoderConfigurator)):
        mod = conf.from_metadata(meta)
        _randomize(mod, gen)
        for k, v in mod.state_dict().items():
            sd[k if k.startswith("per_channel_statistics.") else f"{part}.{k}"] = v
    _save(folder / FILES["video_vae_conv"], sd, _meta(meta["config"]))

    # diffusion VAE: the encoder plus the raw diffusion decoder (fused qkv, t_embedder.mlp.*, static gates on the
    # first block of each kind that the loader folds, a bundled coarse head it drops)
    meta = {"config": {"vae": C.VAE_25_DIFFUSION}}
    enc = VideoEncoderConfigurator.from_metadata(meta)
    _randomize(enc, gen)
    dec = VideoDecoderConfigurator.from_metadata(meta)
    _randomize(dec, gen)
    sd = {}
    for k, v in enc.state_dict().items():
        sd[k if k.startswith("per_channel_statistics.") else f"encoder.{k}"] = v
    dsd = dec.state_dict()
    for k, v in dsd.items():
        if k.startswith("per_channel_statistics."):
            sd[k] = v  # one shared copy (the encoder's is overwritten by the same names: keep the decoder's)
            continue
        if ".attn.qkv.to_q." in k:
            leaf = k.rsplit(".", 1)[-1]
            base = k.split(".attn.qkv.to_q.")[0] + ".attn.qkv"
            sd[f"decoder.{base}.{leaf}"] = torch.cat([dsd[f"{base}.to_q.{leaf}"], dsd[f"{base}.to_k.{leaf}"],
                                                       dsd[f"{base}.to_v.{leaf}"]], dim=0)
            continue
        if ".attn.qkv.to_" in k:
            continue
        sd[f"decoder.{_raw_diffusion_decoder_key(k)}"] = v
    for block, dim in (("det_stages.0.0", 64), ("diff_blocks.0", 16)):
        sd[f"decoder.{block}.gate_msa"] = 1.0 + 0.3 * torch.randn(dim, generator=gen)
        sd[f"decoder.{block}.gate_mlp"] = 1.0 + 0.3 * torch.randn(dim, generator=gen)
    sd["decoder.diff_blocks.1.gate_ctx"] = 1.0 + 0.3 * torch.randn(16, generator=gen)
    sd["decoder.coarse_head.weight"] = torch.randn(3, 16, generator=gen)
    _save(folder / FILES["video_vae_diffusion"], sd, _meta(meta["config"]))


def _build_audio_vae(folder: Path, gen) -> None:
    import official_configs as C
    from ltx_core.model.audio_vae.model_configurator import (
        AudioDecoderConfigurator,
        AudioEncoderConfigurator,
        VocoderConfigurator,
    )

    meta = {"config": C.CONFIGS_25["audio_vae"]}
    sd = {}
    for part, conf in (("encoder", AudioEncoderConfigurator), ("decoder", AudioDecoderConfigurator)):
        mod = conf.from_metadata(meta)
        _randomize(mod, gen)
        for k, v in mod.state_dict().items():
            sd[f"audio_vae.{k}" if k.startswith("per_channel_statistics.") else f"audio_vae.{part}.{k}"] = v
    vocoder = VocoderConfigurator.from_metadata(meta)
    _randomize(vocoder, gen)
    sd.update({f"vocoder.{k}": v for k, v in vocoder.state_dict().items()})
    _save(folder / FILES["audio_vae"], sd, _meta(meta["config"]))


def _tiny_gemma_root(root: Path) -> object:
    """A tiny random Gemma-4 ("gemma4_unified") folder as Google ships it (weights, config, tokenizer, processor
    sidecars), its config stamped with the encoder version 2.5 checks (``gemma4-12b-ltx-v1``)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

    import official_configs as C

    words = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"w{i}" for i in range(60)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(root / "tokenizer.json"))
    config = Gemma4UnifiedConfig(
        text_config=dict(vocab_size=len(words), hidden_size=C.GEMMA_HIDDEN, intermediate_size=24,
                         num_hidden_layers=C.GEMMA_STATES - 1, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=8, global_head_dim=8, layer_types=["sliding_attention", "full_attention"],
                         sliding_window=16, max_position_embeddings=2048),
        vision_config=None, audio_config=None)
    torch.manual_seed(0)
    Gemma4UnifiedForConditionalGeneration(config).save_pretrained(str(root))
    cfg = json.loads((root / "config.json").read_text())
    cfg["gemma_version"] = C.GEMMA_VERSION_25
    (root / "config.json").write_text(json.dumps(cfg))
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                            "pad_token": "<pad>", "padding_side": "left"}))
    (root / "processor_config.json").write_text(json.dumps({"processor_class": "Gemma4UnifiedProcessor"}))
    (root / "chat_template.jinja").write_text("{{ messages }}")
    return config


def _build_text_encoder(folder: Path, gen, transformer_config: dict) -> Path:
    """Gemma-4 weights in ComfyUI's flat layout + the text projection + tokenizer/asset tensors, packed by 1.2's
    own `build_text_encoder_tensors_from_gemma_root` (what the release's TE file holds). The Hugging Face root it
    was packed from is kept next to the set (``<folder>-gemma-root``) and returned."""
    from ltx_core.text_encoders.gemma.encoders.encoder_configurator import _create_feature_extractor
    from ltx_core.text_encoders.gemma.gemma_assets import build_text_encoder_tensors_from_gemma_root

    root = folder.parent / f"{folder.name}-gemma-root"
    config = _tiny_gemma_root(root)
    extractor = _create_feature_extractor(transformer_config, config.text_config)
    _randomize(extractor, gen)
    projection = {f"text_embedding_projection.{k}": v for k, v in extractor.state_dict().items()}
    tensors, metadata = build_text_encoder_tensors_from_gemma_root(str(root), projection)
    _save(folder / FILES["text_encoder"], tensors, metadata)
    return root


def _build_small_parts(folder: Path, gen, transformer_config: dict) -> None:
    import torch

    import official_configs as C
    from ltx_core.duration_head import DurationHeadConfigurator
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator

    meta = {"config": {"transformer": transformer_config, "duration_head": C.DURATION_HEAD}}
    head = DurationHeadConfigurator.from_metadata(meta)
    _randomize(head, gen, scale=0.3)
    _save(folder / FILES["duration_head"], {f"duration_head.{k}": v for k, v in head.state_dict().items()},
          _meta(meta["config"]))

    for name, extra in (("spatial_upsampler", {}), ("temporal_upsampler",
                                                   {"spatial_upsample": False, "temporal_upsample": True})):
        config = {"in_channels": 8, "mid_channels": 32, "num_blocks_per_stage": 1, "dims": 3, **extra}
        up = LatentUpsamplerConfigurator.from_metadata({"config": config})
        _randomize(up, gen)
        _save(folder / FILES[name], up.state_dict(), {"config": json.dumps(config)})

    lora = {}
    for module, (dout, din) in {"transformer_blocks.0.attn1.to_q": (16, 16),
                                "transformer_blocks.1.audio_attn2.to_k": (8, 8)}.items():
        # factors large enough that a LoRA strength off by 0.25 moves whole runs well past the parity tolerance
        lora[f"diffusion_model.{module}.lora_A.weight"] = torch.randn(4, din, generator=gen) * 0.5
        lora[f"diffusion_model.{module}.lora_B.weight"] = torch.randn(dout, 4, generator=gen) * 0.5
    _save(folder / FILES["distilled_lora"], lora, {})


def _op_build_set(folder: str, seed: int = 0, variant: str = "default", zero_keyframes: bool = False) -> dict:
    import torch

    import official_configs as C

    folder = Path(folder)
    gen = torch.Generator().manual_seed(seed)
    transformer_config = C.TRANSFORMER_25_KV if variant == "kv" else C.TRANSFORMER_25
    _build_transformer(folder, gen, transformer_config, zero_keyframes)
    gemma_root = _build_text_encoder(folder, gen, transformer_config)
    _build_video_vaes(folder, gen)
    _build_audio_vae(folder, gen)
    _build_small_parts(folder, gen, transformer_config)
    files = {name: str(folder / rel) for name, rel in FILES.items() if (folder / rel).is_file()}
    return {**files, "gemma_root": str(gemma_root)}


def _build(path: str, configurator, sd_ops):
    import torch
    from ltx_core.loader import SingleGPUModelBuilder

    model = SingleGPUModelBuilder(model_class_configurator=configurator, model_path=path,
                                  model_sd_ops=sd_ops).build(device=torch.device("cpu"), dtype=torch.float32)
    left = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.device.type == "meta"]
    assert not left, f"ltx-core 1.2 left {left[:5]} uninitialised"
    return model.eval()


def _op_transformer(path: str, inputs: str, out: str) -> dict:
    """LTXModel forward (velocity) on the saved inputs, as 1.2's pipelines build its ``Modality`` objects."""
    import torch
    from ltx_core.model.transformer import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator
    from ltx_core.model.transformer.modality import Modality

    model = _build(path, LTXModelConfigurator, LTXV_MODEL_COMFY_RENAMING_MAP)
    x = torch.load(inputs)
    video = Modality(latent=x["v_latent"], sigma=x["v_sigma"], timesteps=x["v_ts"], positions=x["v_pos"],
                     context=x["v_ctx"], context_mask=x["mask"], keyframes_mask=x.get("v_keyframes"))
    audio = Modality(latent=x["a_latent"], sigma=x["a_sigma"], timesteps=x["a_ts"], positions=x["a_pos"],
                     context=x["a_ctx"], context_mask=x["mask"])
    with torch.no_grad():
        vx, ax = model(video, audio, None)
    torch.save({"video": vx, "audio": ax}, out)
    return {"ok": True}


def _op_video_decoder(path: str, latent: str, out: str, seed: int = 0, tiling: list | None = None,
                      steps: int | None = None) -> dict:
    """Official video decoder (conv or diffusion, from the file's metadata) on a *normalized* latent; the
    diffusion decoder draws its noise from ``torch.Generator().manual_seed(seed)``. ``tiling``: ``[[frames,
    overlap], [height, overlap], [width, overlap]]`` (a `TileSizeConfig`, diffusion decoder only); ``steps``:
    override the decoder's stage-5 step count."""
    import torch
    from ltx_core.model.video_vae import (
        VideoDecoderConfigurator,
        is_diffusion_video_vae,
        video_decoder_sd_ops_for_checkpoint,
    )

    from ltx_core.model.video_vae.transformer import EagerSdpaAttention, NeighborhoodAttention3D

    diffusion = is_diffusion_video_vae(path)
    model = _build(path, VideoDecoderConfigurator, video_decoder_sd_ops_for_checkpoint(path, diffusion_vae=diffusion))
    for module in model.modules():  # no natten here: 1.2's own fallback (what its pipelines pick without natten)
        if isinstance(module, NeighborhoodAttention3D):
            module.attention_function = EagerSdpaAttention()
    z = torch.load(latent)
    if steps is not None:
        model.default_inference_timesteps = torch.linspace(1.0, 1.0 / steps, steps)
    with torch.no_grad():
        if tiling is not None:
            from ltx_core.tiling import DimensionSizeConfig, TileSizeConfig

            config = TileSizeConfig(*(DimensionSizeConfig(tile_size=a, overlap=b) for a, b in tiling))
            pixels = torch.cat(list(model.tiled_decode(z, config, generator=torch.Generator().manual_seed(seed))), 2)
        else:
            pixels = model(z, generator=torch.Generator().manual_seed(seed))
    torch.save({"pixels": pixels, "diffusion": diffusion}, out)
    return {"ok": True, "diffusion": diffusion}


def _op_duration_head(path: str, inputs: str, out: str) -> dict:
    import torch
    from ltx_core.duration_head import DURATION_HEAD_KEY_OPS, DurationHeadConfigurator

    model = _build(path, DurationHeadConfigurator, DURATION_HEAD_KEY_OPS)
    x = torch.load(inputs)
    with torch.no_grad():
        seconds = {name: model(video_tokens=x.get(v), audio_tokens=x.get(a)) for name, v, a in
                   (("both", "video", "audio"), ("video", "video", None), ("audio", None, "audio"))}
    torch.save(seconds, out)
    return {"ok": True}


def _op_embeddings(transformer: str, text_encoder: str, inputs: str, out: str) -> dict:
    """1.2's EmbeddingsProcessor (feature extractor from the text encoder file, connectors from the transformer
    file, its Gemma-version check included) on saved Gemma hidden states."""
    import torch
    from ltx_core.text_encoders.gemma import EMBEDDINGS_PROCESSOR_KEY_OPS, EmbeddingsProcessorConfigurator

    configurator = EmbeddingsProcessorConfigurator.with_gemma_model_path(text_encoder)
    model = _build((transformer, text_encoder), configurator, EMBEDDINGS_PROCESSOR_KEY_OPS)
    x = torch.load(inputs)
    with torch.no_grad():
        video, audio, mask = model.process_hidden_states(tuple(x["states"]), x["mask"], padding_side="left")
    torch.save({"video": video, "audio": audio, "mask": mask}, out)
    return {"ok": True}


def _transformer_x0(path: str, lora: str | None = None, strength: float = 0.0, loras: tuple = ()):
    """1.2's X0Model as its `DiffusionStage` builds it (`SingleGPUModelBuilder`, the distilled LoRA fused with
    `LTXV_LORA_COMFY_RENAMING_MAP`), in fp32; the LoRA deltas are aggregated in fp32 (1.2's own `device_fuse_rule`
    on MPS) instead of the bf16 its CUDA / CPU rule uses, which would round a fp32 comparison. `loras`: further
    `(path, strength)` fused after it, in order (`DiffusionStage.with_loras`, e.g. DFR's detailing LoRA)."""
    import dataclasses

    import torch
    from ltx_core.loader import SingleGPUModelBuilder
    from ltx_core.loader.fuse_loras import bf16_fuse_rule
    from ltx_core.loader.primitives import LoraPathStrengthAndSDOps
    from ltx_core.loader.sd_ops import LTXV_LORA_COMFY_RENAMING_MAP
    from ltx_core.model.transformer import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator
    from ltx_core.model.transformer.model import X0Model

    loras = ((() if lora is None else ((lora, strength),)) + tuple(tuple(x) for x in loras))
    loras = tuple(LoraPathStrengthAndSDOps(p, s, LTXV_LORA_COMFY_RENAMING_MAP) for p, s in loras)
    builder = SingleGPUModelBuilder(model_class_configurator=LTXModelConfigurator, model_path=path,
                                    model_sd_ops=LTXV_MODEL_COMFY_RENAMING_MAP, loras=loras,
                                    fuse_rule=dataclasses.replace(bf16_fuse_rule, aggregation_dtype=torch.float32))
    return X0Model(builder.build(device=torch.device("cpu"), dtype=torch.float32)).eval()


def _stage(x0, denoiser, sigmas, noiser, tools, specs, stepper, loop):
    """`DiffusionStage.__call__` of 1.2 with the tiny model's latent channels (its tools assume 128 / 8): the
    states built by `blocks._build_state`, the loop, conditioning cleared, unpatchified."""
    import torch
    from ltx_pipelines.utils.blocks import _build_state

    states = [_build_state(spec, t, noiser, torch.float32, torch.device("cpu")) for spec, t in zip(specs, tools)]
    video, audio = loop(sigmas=sigmas, video_state=states[0], audio_state=states[1], stepper=stepper,
                        transformer=x0, denoiser=denoiser)
    return [t.unpatchify(t.clear_conditioning(s)) for s, t in ((video, tools[0]), (audio, tools[1]))]


def _op_two_stage(mode: str, files: dict, inputs: str, out: str, height: int, width: int, frames: int, fps: float,
                  seed: int, steps: int = 2, strengths: tuple = (0.25, 0.5), video_channels: int = 8,
                  audio_channels: int = 8, audio_mel_bins: int = 16, images: list | None = None) -> dict:
    """A whole official 1.2 run on the tiny set, from prompt contexts to the final (normalized) latents:

    - ``"hq"``: `TI2VidTwoStagesHQPipeline.__call__` - res_2s (`Res2sDiffusionStep`,
      `res2s_audio_video_denoising_loop` with its default seeds and fp32 latents), stage 1 guided by
      `GuidedDenoiser` + `MultiModalGuider(LTX_2_3_HQ_PARAMS)` on `LTX2Scheduler.execute(latent=stage-1 latent)`
      with the distilled LoRA at ``strengths[0]``, upsample, stage 2 `SimpleDenoiser` on
      `STAGE_2_DISTILLED_SIGMAS` with the LoRA at ``strengths[1]``; the stage-1 audio is returned.
    - ``"distilled"``: `DistilledPipeline.__call__` on a 2.5 checkpoint - stage 1 `euler_ancestral_denoising_loop`
      (eta 1, noise seed ``seed + 10000``) on `DISTILLED_SIGMAS`, stage 2 Euler on `STAGE_2_DISTILLED_SIGMAS`, no
      LoRA, the stage-2 audio returned.
    - ``"a2v"``: `A2VidPipelineTwoStage`'s stage 1 with the audio frozen at ``inputs["audio"]`` (normalized,
      unpatchified), Euler on `LTX2Scheduler.execute(steps)`, no guidance (`SimpleDenoiser`).
    - ``"one_stage"``: `TI2VidOneStagePipeline.__call__` - Euler, `FactoryGuidedDenoiser` with `LTX_2_PARAMS`'s
      guidance (STG on the tiny model's block 1) on `LTX2Scheduler.execute(steps)`.

    - ``"v2a"``: the mirror of ``"a2v"`` built from the same 1.2 blocks (1.2 has no video-to-audio pipeline): the
      video frozen at ``inputs["video"]`` (`ModalitySpec(frozen=True, noise_scale=0.0)`), the audio generated.

    ``inputs``: ``{"v_pos", "a_pos", "v_neg", "a_neg"}`` prompt contexts. Writes ``{"video", "audio"}``.
    ``images``: ``[{"frame", "strength"}]`` image conditions as `combined_image_conditionings` builds them
    (`VideoConditionByLatentIndex` at frame 0, `VideoConditionByKeyframeIndex` elsewhere), their pixels
    ``inputs["pixels_half_<i>"]`` / ``inputs["pixels_full_<i>"]`` (``(1, 3, 1, H, W)`` in [-1, 1], per stage size)
    encoded by 1.2's video encoder, applied in stage 1 (half size; full size for ``"one_stage"``) and stage 2.
    """
    from dataclasses import replace
    from functools import partial

    import torch
    from ltx_core.components.diffusion_steps import (
        EulerAncestralDiffusionStep,
        EulerDiffusionStep,
        Res2sDiffusionStep,
    )
    from ltx_core.components.guiders import MultiModalGuider
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
    from ltx_core.components.schedulers import LTX2Scheduler
    from ltx_core.conditioning import VideoConditionByKeyframeIndex, VideoConditionByLatentIndex
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator, upsample_video
    from ltx_core.model.video_vae import VAE_ENCODER_COMFY_KEYS_FILTER, VideoEncoderConfigurator
    from ltx_core.tools import AudioLatentTools, VideoLatentTools
    from ltx_core.types import AudioLatentShape, VideoLatentShape, VideoPixelShape
    from ltx_pipelines import distilled as D
    from ltx_pipelines.utils import constants as K
    from ltx_pipelines.utils.denoisers import GuidedDenoiser, SimpleDenoiser
    from ltx_pipelines.utils.samplers import (
        euler_ancestral_denoising_loop,
        euler_denoising_loop,
        res2s_audio_video_denoising_loop,
    )
    from ltx_pipelines.utils.types import ModalitySpec

    x = torch.load(inputs)
    noiser = GaussianNoiser(generator=torch.Generator().manual_seed(seed))

    def tools(h, w):
        pixel = VideoPixelShape(batch=1, frames=frames, height=h, width=w, fps=fps)
        v = VideoLatentTools(VideoLatentPatchifier(patch_size=1),
                             VideoLatentShape.from_pixel_shape(pixel, latent_channels=video_channels), fps)
        a = AudioLatentTools(AudioPatchifier(patch_size=1), AudioLatentShape.from_video_pixel_shape(
            pixel, channels=audio_channels, mel_bins=audio_mel_bins))
        return v, a

    def guided(params):
        return GuidedDenoiser(x["v_pos"], x["a_pos"],
                              video_guider=MultiModalGuider(params.video_guider_params, negative_context=x["v_neg"]),
                              audio_guider=MultiModalGuider(params.audio_guider_params, negative_context=x["a_neg"]))

    encoder = _build(files["video_vae_conv"], VideoEncoderConfigurator, VAE_ENCODER_COMFY_KEYS_FILTER)

    def conditionings(size):  # ltx_pipelines.utils.helpers.combined_image_conditionings on given pixels
        out = []
        for i, im in enumerate(images or []):
            with torch.no_grad():
                latent = encoder(x[f"pixels_{size}_{i}"].float())
            out.append(VideoConditionByLatentIndex(latent=latent, strength=im["strength"], latent_idx=0)
                       if im["frame"] == 0 else
                       VideoConditionByKeyframeIndex(keyframes=latent, frame_idx=im["frame"], strength=im["strength"]))
        return out

    def specs(**video):
        return [ModalitySpec(context=x["v_pos"], **video), ModalitySpec(context=x["a_pos"])]

    result = {}
    if mode == "one_stage":
        params = replace(K.LTX_2_PARAMS, video_guider_params=replace(K.LTX_2_PARAMS.video_guider_params,
                                                                      stg_blocks=[1]),
                         audio_guider_params=replace(K.LTX_2_PARAMS.audio_guider_params, stg_blocks=[1]))
        from ltx_core.components.guiders import create_multimodal_guider_factory
        from ltx_pipelines.utils.denoisers import FactoryGuidedDenoiser

        denoiser = FactoryGuidedDenoiser(  # as ti2vid_one_stage builds it
            v_context=x["v_pos"], a_context=x["a_pos"],
            video_guider_factory=create_multimodal_guider_factory(params=params.video_guider_params,
                                                                  negative_context=x["v_neg"]),
            audio_guider_factory=create_multimodal_guider_factory(params=params.audio_guider_params,
                                                                  negative_context=x["a_neg"]))
        sigmas = LTX2Scheduler().execute(steps=steps).to(torch.float32)
        video, audio = _stage(_transformer_x0(files["transformer"]), denoiser, sigmas, noiser,
                              tools(height, width), specs(conditionings=conditionings("full")), EulerDiffusionStep(),
                              euler_denoising_loop)
        torch.save({"video": video.latent, "audio": audio.latent, "sigmas": sigmas}, out)
        return {"ok": True}

    if mode == "a2v":  # a2vid_two_stage's stage 1 (audio `frozen=True, noise_scale=0.0` at ``x["audio"]``),
        # Euler, without guidance (`SimpleDenoiser`): frozen audio gets sigma 0 in 1.2's `modality_from_latent_state`
        sigmas = LTX2Scheduler().execute(steps=steps).to(torch.float32)
        frozen = ModalitySpec(context=x["a_pos"], frozen=True, noise_scale=0.0, initial_latent=x["audio"])
        video, audio = _stage(_transformer_x0(files["transformer"]), SimpleDenoiser(x["v_pos"], x["a_pos"]), sigmas,
                              noiser, tools(height, width), [ModalitySpec(context=x["v_pos"]), frozen],
                              EulerDiffusionStep(), euler_denoising_loop)
        torch.save({"video": video.latent, "audio": audio.latent}, out)
        return {"ok": True}

    if mode == "v2a":  # the mirror: video `frozen=True, noise_scale=0.0` at ``x["video"]``, the audio generated
        sigmas = LTX2Scheduler().execute(steps=steps).to(torch.float32)
        frozen = ModalitySpec(context=x["v_pos"], frozen=True, noise_scale=0.0, initial_latent=x["video"])
        video, audio = _stage(_transformer_x0(files["transformer"]), SimpleDenoiser(x["v_pos"], x["a_pos"]), sigmas,
                              noiser, tools(height, width), [frozen, ModalitySpec(context=x["a_pos"])],
                              EulerDiffusionStep(), euler_denoising_loop)
        torch.save({"video": video.latent, "audio": audio.latent}, out)
        return {"ok": True}

    half = tools(height // 2, width // 2)
    if mode == "hq":
        v_shape = half[0].target_shape.to_torch_shape()
        sigmas = LTX2Scheduler().execute(latent=torch.empty(v_shape), steps=steps).to(torch.float32)
        x0 = _transformer_x0(files["transformer"], files["distilled_lora"], strengths[0])
        loop = res2s_audio_video_denoising_loop
        video, audio = _stage(x0, guided(K.LTX_2_3_HQ_PARAMS), sigmas, noiser, half,
                              specs(conditionings=conditionings("half")), Res2sDiffusionStep(),
                              partial(loop, model_dtype=torch.float32))
    elif mode == "distilled":
        sigmas = K.DISTILLED_SIGMAS
        x0 = _transformer_x0(files["transformer"])
        stepper = EulerAncestralDiffusionStep(eta=D.ANCESTRAL_ETA, s_noise=D.ANCESTRAL_S_NOISE)
        loop = partial(euler_ancestral_denoising_loop, noise_seed=seed + D.ANCESTRAL_NOISE_SEED_OFFSET,
                       model_dtype=torch.float32)
        assert D.should_use_ancestral_sampler(files["transformer"])  # the set declares 2.5
        video, audio = _stage(x0, SimpleDenoiser(x["v_pos"], x["a_pos"]), sigmas, noiser, half,
                              specs(conditionings=conditionings("half")), stepper, loop)
    else:
        raise ValueError(mode)
    result["stage_1_sigmas"] = sigmas
    stage_1_audio = audio.latent

    from ltx_core.loader import SingleGPUModelBuilder

    upsampler = SingleGPUModelBuilder(model_class_configurator=LatentUpsamplerConfigurator,
                                      model_path=files["spatial_upsampler"]).build(
        device=torch.device("cpu"), dtype=torch.float32).eval()
    with torch.no_grad():
        upscaled = upsample_video(latent=video.latent[:1], video_encoder=encoder, upsampler=upsampler)

    s2 = K.STAGE_2_DISTILLED_SIGMAS.to(torch.float32)
    full = tools(height, width)
    stage_2 = [ModalitySpec(context=x["v_pos"], noise_scale=s2[0].item(), initial_latent=upscaled,
                            conditionings=conditionings("full")),
               ModalitySpec(context=x["a_pos"], noise_scale=s2[0].item(), initial_latent=audio.latent)]
    if mode == "hq":
        x0 = _transformer_x0(files["transformer"], files["distilled_lora"], strengths[1])
        stepper, loop = Res2sDiffusionStep(), partial(res2s_audio_video_denoising_loop, model_dtype=torch.float32)
    else:  # the distilled pipeline's stage 2: always deterministic Euler
        stepper, loop = EulerDiffusionStep(), euler_denoising_loop
    video, audio = _stage(x0, SimpleDenoiser(x["v_pos"], x["a_pos"]), s2, noiser, full, stage_2, stepper, loop)
    result.update(video=video.latent, audio=stage_1_audio if mode == "hq" else audio.latent, upscaled=upscaled)
    torch.save(result, out)
    return {"ok": True}


def _op_batch(requests: list) -> list:
    """Several operations in this one process (the imports cost most of a call): ``[{"op": ..., **kwargs}]``."""
    return [_OPS[r.pop("op")](**r) for r in (dict(r) for r in requests)]


_OPS = {
    "build_set": _op_build_set,
    "transformer": _op_transformer,
    "video_decoder": _op_video_decoder,
    "duration_head": _op_duration_head,
    "embeddings": _op_embeddings,
    "two_stage": _op_two_stage,
    "batch": _op_batch,
}


def _main(request_path: str) -> None:
    _child_setup()
    request = json.loads(Path(request_path).read_text())
    op = request.pop("op")
    print(json.dumps(_OPS[op](**request)))


if __name__ == "__main__":
    _main(sys.argv[1])
