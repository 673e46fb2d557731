"""The hot path: tokenize -> batch -> infer -> pool. Nothing here imports a web framework."""
