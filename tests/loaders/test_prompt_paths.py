"""The three prompt paths hold the same tensors -> the pipeline gives the same clip: local Gemma, a saved
conditioning file, and the LTX API encoder (a real HTTP server on 127.0.0.1 serving those tensors)."""

from __future__ import annotations

import pickle

import torch
from test_api_encoder import KEY, FakeLTXAPI, Reply

from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline
from diffusers_ltx2.factory import TINY_CLIP
from diffusers_ltx2.loaders import GemmaPromptEncoder, LTXAPIPromptEncoder, save_conditioning
from diffusers_ltx2.loaders.identity import connector_fingerprint

MODEL_ID = "enc:model-of-the-tiny-pipeline"
RUN = dict(TINY_CLIP, num_inference_steps=2, output_type="latent")


def test_local_saved_and_api_embeddings_give_identical_output(tiny_pipe, tmp_path):
    pipe = tiny_pipe
    pipe.register_to_config(model_identity=MODEL_ID)
    prompt, negative = "a red bird flies over the sea", ""
    local = GemmaPromptEncoder(pipe.tokenizer, pipe.text_encoder, pipe.connectors, max_sequence_length=128,
                               model_identity=connector_fingerprint(pipe.connectors))
    pos, neg = local.encode([prompt]), local.encode([negative])

    def run(pipeline=pipe, **kw):
        return pipeline(generator=torch.Generator().manual_seed(0), max_sequence_length=128,
                        guider=ClassifierFreeGuidance(3.0, 7.0), **RUN, **kw)

    ref = run(prompt=prompt, negative_prompt=negative)

    save_conditioning(tmp_path / "pos.safetensors", pos, prompt=prompt)
    save_conditioning(tmp_path / "neg.safetensors", neg, prompt=negative)
    saved = run(prompt_embeds=str(tmp_path / "pos.safetensors"),
                negative_prompt_embeds=str(tmp_path / "neg.safetensors"))

    server = FakeLTXAPI()
    replies = {
        p: pickle.dumps([[torch.cat([e.video_context, e.audio_context], -1)[0:1].clone(),
                          {"attention_mask": e.attention_mask.clone()}]])
        for p, e in ((prompt, pos), (negative, neg))
    }
    server.default = lambda request: Reply(200, replies[__import__("json").loads(request["body"])["prompt"]])
    server.thread.start()
    try:
        api = LTXAPIPromptEncoder(api_key=KEY, model_id=MODEL_ID, base_url=server.url, model_config=pipe.connectors,
                                  timeout=5)
        pipe.prompt_encoder = api
        remote = run(prompt=prompt, negative_prompt=negative)
        # the documented way: load without Gemma, prompts go to the API
        pipe.save_pretrained(tmp_path / "model")
        gemma_free = LTX2AudioVideoPipeline.from_pretrained(tmp_path / "model", text_encoder=None, prompt_encoder=api)
        assert gemma_free.text_encoder is None and gemma_free.model_identity == MODEL_ID
        reloaded = run(gemma_free, prompt=prompt, negative_prompt=negative)
    finally:
        server.server.shutdown()
        server.server.server_close()
    assert len(server.requests) == 4  # the prompt and the negative prompt, twice; nothing from Gemma
    # reloaded weights may take other fp32 BLAS paths (sums reordered, ~1e-6)
    torch.testing.assert_close(reloaded.frames, ref.frames, rtol=0, atol=1e-5)

    for out in (saved, remote):
        torch.testing.assert_close(out.frames, ref.frames, rtol=0, atol=0)
        torch.testing.assert_close(out.audio, ref.audio, rtol=0, atol=0)
