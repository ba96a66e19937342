"""Convert an official LTX-2 LoRA (``diffusion_model.*`` lora_A/B or lora_down/up) to diffusers/PEFT keys.

    python conversion/convert_lora.py ic-lora.safetensors ic-lora-diffusers.safetensors [--dtype keep|bf16|fp32]

Thin wrapper over :func:`diffusers_ltx2.conversion.convert_lora_file`; the same as ``ltx2 convert-lora``.
Metadata such as ``reference_downscale_factor`` is kept.
"""

import sys

from diffusers_ltx2.cli.convert import main_convert_lora

if __name__ == "__main__":
    sys.exit(main_convert_lora())
