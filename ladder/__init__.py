"""Ladder Residual: a Llama-style model with swappable residual wirings and a tensor-parallel runtime.

Importing `ladder` has no side effects beyond registering the `ladder_llama` architecture with the
transformers Auto classes (see ladder/hf.py), which happens when `ladder.hf` is first imported.
"""
from .config import PRESETS, WIRINGS, ModelConfig, preset
from .model import Transformer, build_model, init_weights
from .parallelize import init_distributed
from .tp import SingleDevice, TensorParallel, shard_state_dict

__all__ = ["PRESETS", "WIRINGS", "ModelConfig", "preset", "Transformer", "build_model", "init_weights",
           "SingleDevice", "TensorParallel", "init_distributed", "shard_state_dict"]
