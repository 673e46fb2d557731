"""Numpy kernels both sides use: the gateway's packing and the Triton model's pooling."""
