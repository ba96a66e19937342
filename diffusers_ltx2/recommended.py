"""Recommended multimodal guidance dials (LTX-2 model card / official pipelines).

A module of plain data with no imports, so the `ltx2` command line can show these defaults in `--help` without
importing torch or diffusers. `diffusers_ltx2.guiders.multimodal` re-exports them.
"""

RECOMMENDED_VIDEO = dict(cfg=3.0, stg=1.0, modality_scale=3.0, rescale=0.7)
RECOMMENDED_AUDIO = dict(cfg=7.0, stg=1.0, modality_scale=3.0, rescale=0.7)
