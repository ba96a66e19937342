"""Convert an official LTX-2 single-file checkpoint into a diffusers pipeline folder.

    python conversion/convert_checkpoint.py ltx-2-19b-dev.safetensors ./ltx2-diffusers \
        [--dtype keep|bf16|fp32] [--fp8 dequantize|keep] [--max-shard-size 5GB] [--gemma PATH] [--overwrite]

Thin wrapper over :func:`diffusers_ltx2.conversion.convert_single_file`; the same as ``ltx2 convert``.
"""

import sys

from diffusers_ltx2.cli.convert import main_convert

if __name__ == "__main__":
    sys.exit(main_convert())
