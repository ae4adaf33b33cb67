"""Reading and writing other frameworks' checkpoints (Hugging Face transformers: `t5lab.interop.hf`; peft LoRA
adapters: `t5lab.interop.peft`, imported on its own since peft is optional)."""

from t5lab.interop.hf import load_model, load_pretrained, save_pretrained

__all__ = ["load_model", "load_pretrained", "save_pretrained"]
