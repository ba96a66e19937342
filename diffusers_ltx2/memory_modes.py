"""Names of the memory modes (quantization and offload), as plain data with no imports, so the `ltx2` command line
can list them in `--help` and check them without importing torch. `diffusers_ltx2.quantization` and
`diffusers_ltx2.memory` re-export them."""

#: transformer quantization at load: the official float8 cast, then optimum-quanto's weight types
QUANTIZATION_MODES = ("fp8-cast", "fp8", "int8", "int4")
#: Gemma text-encoder quantization (optimum-quanto)
TEXT_ENCODER_QUANTIZATION_MODES = ("fp8", "int8", "int4")
#: weight streaming: whole components, transformer blocks, blocks from files
OFFLOAD_MODES = ("model", "blocks", "disk")
