"""The LTX-2 pipelines of this package."""

from .base import LTX2PipelineBase
from .pipeline_ltx2 import LTX2AudioVideoPipeline
from .pipeline_ltx2_ic_lora import LTX2ICLoRAPipeline
from .pipeline_output import LTX2AudioVideoPipelineOutput
from .two_stage import LTX2TwoStagePipeline
from .ic_lora_two_stage import LTX2ICLoRATwoStagePipeline

__all__ = ["LTX2AudioVideoPipeline", "LTX2ICLoRAPipeline", "LTX2AudioVideoPipelineOutput", "LTX2PipelineBase",
           "LTX2TwoStagePipeline", "LTX2ICLoRATwoStagePipeline"]

from .._registration import register as _register  # noqa: E402

# diffusers resolves `_class_name` and the `diffusers_ltx2` component library through these entries.
_register(
    pipelines={"LTX2AudioVideoPipeline": LTX2AudioVideoPipeline, "LTX2ICLoRAPipeline": LTX2ICLoRAPipeline,
               "LTX2TwoStagePipeline": LTX2TwoStagePipeline, "LTX2ICLoRATwoStagePipeline": LTX2ICLoRATwoStagePipeline},
    loadable_bases=("Guider", "LTX2Scheduler"),
)
