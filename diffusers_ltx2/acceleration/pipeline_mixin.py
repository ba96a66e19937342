"""`pipe.compile()` and `pipe.set_attention_backend()` on the LTX-2 pipelines."""

from __future__ import annotations


class AccelerationMixin:
    """Speed controls of the pipelines: regional compilation and the attention backend of the transformer."""

    def compile(self, *, backend="inductor", mode: str | None = None, dynamic: bool | None = None,
                fullgraph: bool = False, options: dict | None = None):
        """Regional `torch.compile` of the transformer: each repeated block's `forward` (hooks stay eager; see
        `diffusers_ltx2.acceleration.compile`). Compiles on the first call that runs the transformer; returns the
        pipeline. Call it before `apply_offload` / `enable_model_cpu_offload`.

        Args: as `torch.compile` (`backend="eager"` / `"aot_eager"` trace without generating code).

        Raises:
            ValueError: the pipeline has no transformer.
        """
        from .compile import compile_blocks

        if getattr(self, "transformer", None) is None:
            raise ValueError("this pipeline has no transformer to compile")
        compile_blocks(self.transformer, backend=backend, mode=mode, dynamic=dynamic, fullgraph=fullgraph,
                       options=options)
        return self

    def set_attention_backend(self, name: str):
        """The transformer's attention backend: an `--attention` name ("native", "flash", "sage", "flex",
        "native-cudnn", ...) or a diffusers backend name; checked first (package installed, kernels present).
        Works under every guidance pass layout (`acceleration.attention_backends`); unlike diffusers'
        `transformer.set_attention_backend`, the process-wide default stays as it was. Returns the pipeline.

        Raises:
            ValueError: unknown backend, or one this machine cannot run (diffusers' requirement message).
        """
        from .attention_backends import set_transformer_backend

        if getattr(self, "transformer", None) is None:
            raise ValueError("this pipeline has no transformer")
        set_transformer_backend(self.transformer, name)
        return self
