"""The T5 encoder-decoder as plain, single-device PyTorch.

Read `t5.py` top to bottom: embeddings → encoder stack → decoder stack → output layer. The pieces it is
built from are in `layers.py` (RMS norm, relative position bias, feed-forward) and `attention.py`
(multi-head attention with a KV cache behind one small kernel interface, `AttentionBias`). Faster paths
(CPU or GPU kernels, the fused output layer + loss) live in `t5lab.kernels` and are applied from outside.

Tensor names carry their shapes where shapes change. Letters:
    B batch, S encoder (source) length, T decoder (target) length, D d_model, H query heads,
    G key/value heads (H for plain T5, 1 for shared heads), K d_kv, F d_ff, E experts, C capacity, V vocab,
    R relative-position buckets.

This package knows nothing of training, data, checkpoints on disk or the CLI.
"""

from t5lab.model.attention import AttentionBias, KVCache
from t5lab.model.moe import RouterStats
from t5lab.model.t5 import T5, Seq2SeqOutput, build_model

__all__ = ["AttentionBias", "KVCache", "RouterStats", "Seq2SeqOutput", "T5", "build_model"]
