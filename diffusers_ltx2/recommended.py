"""Recommended multimodal guidance dials and the official default negative prompt (LTX-2 model card / official
pipelines).

A module of plain data with no imports, so the `ltx2` command line can show these defaults in `--help` without
importing torch or diffusers. `diffusers_ltx2.guiders.multimodal` re-exports them.
"""

RECOMMENDED_VIDEO = dict(cfg=3.0, stg=1.0, modality_scale=3.0, rescale=0.7)
RECOMMENDED_AUDIO = dict(cfg=7.0, stg=1.0, modality_scale=3.0, rescale=0.7)

#: ltx-pipelines 1.0.0 `utils/constants.py` DEFAULT_NEGATIVE_PROMPT: the two-stage pipeline's negative prompt when the
#: stage-1 guider needs a negative pass and none is given. Pass `negative_prompt=""` for the empty prompt.
DEFAULT_NEGATIVE_PROMPT = (
    "blurry, out of focus, overexposed, underexposed, low contrast, washed out colors, excessive noise, "
    "grainy texture, poor lighting, flickering, motion blur, distorted proportions, unnatural skin tones, "
    "deformed facial features, asymmetrical face, missing facial features, extra limbs, disfigured hands, "
    "wrong hand count, artifacts around text, inconsistent perspective, camera shake, incorrect depth of "
    "field, background too sharp, background clutter, distracting reflections, harsh shadows, inconsistent "
    "lighting direction, color banding, cartoonish rendering, 3D CGI look, unrealistic materials, uncanny "
    "valley effect, incorrect ethnicity, wrong gender, exaggerated expressions, wrong gaze direction, "
    "mismatched lip sync, silent or muted audio, distorted voice, robotic voice, echo, background noise, "
    "off-sync audio, incorrect dialogue, added dialogue, repetitive speech, jittery movement, awkward "
    "pauses, incorrect timing, unnatural transitions, inconsistent framing, tilted camera, flat lighting, "
    "inconsistent tone, cinematic oversaturation, stylized filters, or AI artifacts."
)
