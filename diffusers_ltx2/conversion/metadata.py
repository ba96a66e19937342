"""Metadata keys of official LTX-2 single-file checkpoints (the safetensors header's `__metadata__`)."""

#: the official checkpoint's model id (an opaque string; prompt embeddings made for it carry the same id)
MODEL_ID_METADATA_KEY = "encrypted_wandb_properties"
