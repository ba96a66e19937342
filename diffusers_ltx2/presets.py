"""Named generation recipes of the official pipelines, as plain data.

No torch / diffusers import, so the `ltx2` command line can show and check them before anything heavy loads;
`LTX2TwoStagePipeline.generate_hq` (Python) and `ltx2 generate --two-stage --preset hq` (CLI) apply them.

`HQ_TWO_STAGE` is ltx-pipelines 1.2.0's `ti2vid_two_stages_hq.py` (`TI2VidTwoStagesHQPipeline`, the
`LTX_2_3_HQ_PARAMS` of `utils/constants.py` and the defaults of `utils/args.py: hq_2_stage_arg_parser`):

- stage 1 at half size: the res_2s sampler, `num_inference_steps` (15) of the LTX-2 schedule with the shift taken
  from the stage-1 latent's token count (`LTX2Scheduler.execute(latent=...)`, not the 4096-token default of the
  other pipelines), multimodal guidance with STG off (video cfg 3, rescale 0.45, modality 3; audio cfg 7,
  rescale 1.0, modality 3), the distilled LoRA at 0.25 on top of the user's LoRAs;
- stage 2 at full size: the res_2s sampler on the distilled refine sigmas `[0.909375, 0.725, 0.421875, 0]`,
  unguided, the distilled LoRA at 0.5; it refines the video only: the stage-1 audio is the one decoded;
- the res_2s noise seeds are the loop's default (-1 / 9999), not the call's seed (the HQ pipeline passes none);
- default size 1088 x 1920 (stage 1 at 544 x 960), 121 frames at 24 fps, seed 10, and 1.2's default negative
  prompt (`NEGATIVE_PROMPT_12`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .recommended import DEFAULT_NEGATIVE_PROMPT

__all__ = ["HQ_TWO_STAGE", "NEGATIVE_PROMPT_12", "PRESETS", "TwoStagePreset"]

#: ltx-pipelines 1.2.0 `utils/constants.py` DEFAULT_NEGATIVE_PROMPT (1.0.0's with five caption tags in front)
NEGATIVE_PROMPT_12 = (
    "has_subtitles, has_blurbox, transition from black, transition to black, speech_ending_short, "
    + DEFAULT_NEGATIVE_PROMPT
)


@dataclass(frozen=True)
class TwoStagePreset:
    """One two-stage recipe (see the module docstring for `HQ_TWO_STAGE`).

    Attributes:
        name: the preset's name (`--preset NAME`).
        num_inference_steps: stage-1 steps.
        height, width, num_frames, frame_rate, seed: the official defaults of the recipe's script.
        sampler, stage_2_sampler: each stage's sampler name (`schedulers.samplers`).
        video, audio: `ModalityGuidanceParams` fields of stage 1's multimodal guider.
        stage_1_distilled_lora_strength, stage_2_distilled_lora_strength: the distilled LoRA in each stage.
        token_count_shift: stage-1 sigmas shifted for the stage-1 latent's token count.
        refine_audio: whether the stage-2 audio is the one returned (False: stage 1's).
        negative_prompt: the default negative prompt.
    """

    name: str
    num_inference_steps: int
    height: int
    width: int
    num_frames: int
    frame_rate: float
    seed: int
    sampler: str
    stage_2_sampler: str
    video: dict = field(default_factory=dict)
    audio: dict = field(default_factory=dict)
    stage_1_distilled_lora_strength: float | None = None
    stage_2_distilled_lora_strength: float | None = None
    token_count_shift: bool = False
    refine_audio: bool = True
    negative_prompt: str = NEGATIVE_PROMPT_12


HQ_TWO_STAGE = TwoStagePreset(
    name="hq", num_inference_steps=15, height=1088, width=1920, num_frames=121, frame_rate=24.0, seed=10,
    sampler="res_2s", stage_2_sampler="res_2s",
    video=dict(cfg=3.0, stg=0.0, modality_scale=3.0, rescale=0.45),
    audio=dict(cfg=7.0, stg=0.0, modality_scale=3.0, rescale=1.0),
    stage_1_distilled_lora_strength=0.25, stage_2_distilled_lora_strength=0.5,
    token_count_shift=True, refine_audio=False,
)

PRESETS = {HQ_TWO_STAGE.name: HQ_TWO_STAGE}
