"""Attention kernels applied to a plain model from outside (placeholder: the model engineer owns this file)."""
