"""The embedding appliance: jina-embeddings-v3 on Triton behind an OpenAI-compatible API."""

__version__ = "0.1.0"
