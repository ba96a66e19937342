"""Names of the memory and speed modes (quantization, offload, attention backends), as plain data with no imports,
so the `ltx2` command line can list them in `--help` and check them without importing torch.
`diffusers_ltx2.quantization` and `diffusers_ltx2.memory` re-export them."""

#: transformer quantization at load: the official float8 cast and scaled matmul, optimum-quanto's weight types,
#: torchao's formats (`diffusers_ltx2.quantization.torchao_backend`: some need a recent NVIDIA GPU)
QUANTO_MODES = ("fp8", "int8", "int4")
TORCHAO_MODES = ("torchao-int8", "torchao-fp8-weight", "torchao-nvfp4-weight", "torchao-int4", "torchao-fp8",
                 "torchao-nvfp4", "torchao-mxfp8")
QUANTIZATION_MODES = ("fp8-cast", "fp8-scaled-mm", *QUANTO_MODES, *TORCHAO_MODES)
#: Gemma text-encoder quantization (optimum-quanto)
TEXT_ENCODER_QUANTIZATION_MODES = QUANTO_MODES
#: `--attention` names -> diffusers' attention-dispatcher backends (`transformer.set_attention_backend`):
#: "native" = torch SDPA choosing its kernel, "native-*" = SDPA pinned to one kernel, the rest external packages
ATTENTION_BACKENDS = {"native": "native", "flash": "flash", "flash3": "_flash_3", "sage": "sage", "flex": "flex",
                      "xformers": "xformers", "native-flash": "_native_flash", "native-efficient": "_native_efficient",
                      "native-cudnn": "_native_cudnn", "native-math": "_native_math"}
#: weight streaming: whole components, transformer blocks, blocks from files
OFFLOAD_MODES = ("model", "blocks", "disk")
