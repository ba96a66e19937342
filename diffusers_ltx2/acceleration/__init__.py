"""Speed: regional `torch.compile` of the transformer blocks (`compile.py`) and attention backends
(`attention_backends.py`)."""
