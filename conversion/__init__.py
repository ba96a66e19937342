"""Command-line converters for official LTX-2 checkpoints and LoRAs (thin wrappers over
:mod:`diffusers_ltx2.conversion`)."""
