"""Hugging Face interoperability.

* Native <-> HF: our parameter names are `LlamaForCausalLM`'s minus the `model.` prefix, so loading a
  Llama checkpoint is a prefix strip, and exporting is the reverse (`load_pretrained`, `to_hf`).
* `LadderLlamaConfig` / `LadderLlamaForCausalLM`: a Llama config plus `wiring` and `ladder_layers`, and a
  causal LM that reuses transformers' own attention, MLP, norm, rotary embedding and cache, and only
  swaps the layer loop for the wirings of ladder/model.py. Registered with the Auto classes (import
  `ladder` first), so `from_pretrained`, `generate` and lm-eval's `hf` model work without remote code.
* `convert(checkpoint, ladder_layers=N)`: a pretrained Llama with its last N layers rewired to ladder,
  weights unchanged (the paper's Llama-3.1-8B-Instruct adaptation).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (AutoConfig, AutoModelForCausalLM, DynamicCache, LlamaConfig, LlamaForCausalLM,
                          PreTrainedConfig)
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.models.llama.modeling_llama import (LlamaDecoderLayer, LlamaPreTrainedModel, LlamaRMSNorm,
                                                      LlamaRotaryEmbedding)

from .config import WIRING_SPECS, ModelConfig
from .model import LAYER_WIRINGS, Stream, Transformer, build_model
from .paths import read_safetensors, resolve_checkpoint
from .tp import SingleDevice, gather_state_dict

LLAMA_TYPES = ("llama", "ladder_llama")


# --------------------------------------------------------------------------------------------- config
def config_from_hf(hf: PreTrainedConfig, max_seq_len: int | None = None, **overrides) -> ModelConfig:
    """Our ModelConfig for a Hugging Face Llama (or ladder-Llama) config."""
    if getattr(hf, "model_type", None) not in LLAMA_TYPES:
        raise ValueError(f"not a Llama-architecture checkpoint: model_type={getattr(hf, 'model_type', None)!r} "
                         f"(expected one of {LLAMA_TYPES})")
    if getattr(hf, "hidden_act", "silu") != "silu" or getattr(hf, "attention_bias", False) \
            or getattr(hf, "mlp_bias", False):
        raise ValueError("unsupported Llama variant: only SiLU MLPs without biases are implemented")
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    if head_dim * hf.num_attention_heads != hf.hidden_size:
        raise ValueError(f"head_dim={head_dim} x heads={hf.num_attention_heads} != hidden_size={hf.hidden_size}")
    rope = dict(getattr(hf, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", "default")
    if rope_type not in ("default", "llama3"):
        raise ValueError(f"unsupported rope_type {rope_type!r} (supported: default, llama3)")
    scaling = None
    if rope_type == "llama3":
        scaling = {k: rope[k] for k in ("factor", "low_freq_factor", "high_freq_factor",
                                        "original_max_position_embeddings")}
    fields = dict(
        n_layers=hf.num_hidden_layers, dim=hf.hidden_size, n_heads=hf.num_attention_heads,
        n_kv_heads=hf.num_key_value_heads or hf.num_attention_heads, ffn_dim=hf.intermediate_size,
        vocab_size=hf.vocab_size, rope_theta=float(rope.get("rope_theta", 10000.0)), rope_scaling=scaling,
        norm_eps=hf.rms_norm_eps, tie_embeddings=bool(hf.tie_word_embeddings),
        max_seq_len=min(hf.max_position_embeddings, max_seq_len or 4096),
        wiring=getattr(hf, "wiring", "standard"), ladder_layers=getattr(hf, "ladder_layers", 0))
    return ModelConfig(**{**fields, **overrides})


def hf_config_kwargs(config: ModelConfig) -> dict:
    rope = {"rope_type": "default", "rope_theta": config.rope_theta}
    if config.rope_scaling:
        rope = {"rope_type": "llama3", "rope_theta": config.rope_theta, **config.rope_scaling}
    max_pos = max(config.max_seq_len, (config.rope_scaling or {}).get("original_max_position_embeddings", 0))
    return dict(vocab_size=config.vocab_size, hidden_size=config.dim, intermediate_size=config.ffn_dim,
                num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
                num_key_value_heads=config.n_kv_heads, head_dim=config.head_dim, max_position_embeddings=max_pos,
                rms_norm_eps=config.norm_eps, tie_word_embeddings=config.tie_embeddings, rope_parameters=rope,
                # token ids belong to the tokenizer, not the shape: unset unless the caller passes them
                bos_token_id=None, eos_token_id=None)


def to_hf_config(config: ModelConfig, **extra) -> LlamaConfig:
    """A plain LlamaConfig for the standard wiring, a LadderLlamaConfig for the others."""
    kw = {**hf_config_kwargs(config), **extra}
    if config.wiring == "standard":
        return LlamaConfig(**kw)
    if config.spec.weights_of:
        raise ValueError(f"wiring {config.wiring!r} is not a model of its own (it runs the {config.spec.weights_of} "
                         f"model's weights: a speed ceiling or a schedule); it has no HF export, export that model")
    ladder_layers = config.ladder_layers
    return LadderLlamaConfig(wiring=config.wiring,
                             ladder_layers=list(ladder_layers) if isinstance(ladder_layers, tuple) else ladder_layers,
                             **kw)


# --------------------------------------------------------------------------------------------- HF classes
@strict
class LadderLlamaConfig(LlamaConfig):
    """LlamaConfig plus the residual wiring: `wiring` in standard / parallel / ladder / hybrid, and for
    hybrid `ladder_layers`, an int N (the last N layers) or an explicit list of layer indices."""
    model_type = "ladder_llama"
    wiring: str = "hybrid"
    ladder_layers: int | list[int] = 0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        spec = WIRING_SPECS.get(self.wiring)
        if spec is not None and spec.weights_of:
            raise ValueError(f"wiring={self.wiring!r} runs the {spec.weights_of} model's weights (a speed ceiling "
                             f"or a schedule), not a model of its own")
        config_from_hf(self)  # validates wiring and ladder_layers against the layer count


class LadderDecoderLayer(LlamaDecoderLayer):
    """transformers' Llama layer, exposing its two modules to the wirings of ladder/model.py."""

    def __init__(self, config, layer_idx: int, wiring: str):
        super().__init__(config, layer_idx)
        if WIRING_SPECS[wiring].shares_norm:  # one norm before both modules (parallel)
            self.post_attention_layernorm = None

    def attention(self, h, **ctx):
        return self.self_attn(hidden_states=h, **ctx)[0]

    def feed_forward(self, h):
        return self.mlp(h)


class LadderLlamaModel(LlamaPreTrainedModel):
    config_class = LadderLlamaConfig

    def __init__(self, config: LadderLlamaConfig):
        super().__init__(config)
        self.wirings = config_from_hf(config).layer_wirings()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(LadderDecoderLayer(config, i, w) for i, w in enumerate(self.wirings))
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                use_cache=None, past_key_values=None, **kwargs):
        cache = cache if cache is not None else past_key_values
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            past = cache.get_seq_length() if cache is not None else 0
            position_ids = (torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past)[None]
        mask = create_causal_mask(config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                  cache=cache, position_ids=position_ids)
        ctx = dict(attention_mask=mask, position_embeddings=self.rotary_emb(inputs_embeds, position_ids=position_ids),
                   position_ids=position_ids, cache=cache, use_cache=use_cache)
        comm = SingleDevice()
        s = Stream(inputs_embeds)
        for layer, wiring in zip(self.layers, self.wirings):
            s = LAYER_WIRINGS[wiring](layer, s, comm, **ctx)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(s.settle(comm)), cache=cache)


class LadderLlamaForCausalLM(LlamaForCausalLM):
    config_class = LadderLlamaConfig

    def __init__(self, config: LadderLlamaConfig):
        LlamaPreTrainedModel.__init__(self, config)
        self.model = LadderLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


AutoConfig.register("ladder_llama", LadderLlamaConfig, exist_ok=True)
AutoModelForCausalLM.register(LadderLlamaConfig, LadderLlamaForCausalLM, exist_ok=True)


# --------------------------------------------------------------------------------------------- loading
def load_hf_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All safetensors shards of a checkpoint, with names in our convention (no `model.` prefix)."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {path}")
    state = {}
    for f in files:
        state.update(read_safetensors(f))
    return {k.removeprefix("model."): v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}


def load_pretrained(name_or_path, comm=None, *, device="cpu", dtype=torch.float32, max_seq_len=None,
                    **config_overrides) -> Transformer:
    """Load a HF Llama (or ladder-Llama) checkpoint into the native runtime, sharded over `comm`.

    `config_overrides` may change the wiring, e.g. `wiring="hybrid", ladder_layers=16`.
    """
    path = resolve_checkpoint(name_or_path)
    config = config_from_hf(AutoConfig.from_pretrained(path), max_seq_len=max_seq_len, **config_overrides)
    return build_model(config, comm, device=device, dtype=dtype, state_dict=load_hf_state_dict(path))


def to_hf(model: Transformer, **config_extra):
    """Export a native model (gathering shards under TP; all ranks call) as a transformers model."""
    comm = model.comm
    state = gather_state_dict(model, comm) if comm.size > 1 else model.state_dict()
    hf_config = to_hf_config(model.config, **config_extra)
    cls = LlamaForCausalLM if model.config.wiring == "standard" else LadderLlamaForCausalLM
    with torch.device("meta"):
        hf = cls(hf_config)
    hf_state = {("lm_head.weight" if k == "lm_head.weight" else f"model.{k}"): v for k, v in state.items()}
    if model.config.tie_embeddings:
        hf_state.pop("lm_head.weight", None)
    hf.load_state_dict(hf_state, strict=False, assign=True)
    if model.config.tie_embeddings:
        hf.tie_weights()
    missing = [n for n, p in hf.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"export left parameters unset: {missing}")
    hf.model.rotary_emb = LlamaRotaryEmbedding(config=hf_config).to(model.lm_head.weight.device)
    return hf.eval()


def convert(checkpoint, ladder_layers: int | list[int] = 16, *, wiring: str = "hybrid", dtype=torch.float32,
            device="cpu") -> LadderLlamaForCausalLM:
    """A pretrained HF Llama with its last `ladder_layers` layers (or the listed ones) rewired to ladder.

    Weights load unchanged; `ladder_layers=0` gives exactly the source model.
    """
    path = resolve_checkpoint(checkpoint)
    src = AutoConfig.from_pretrained(path)
    if src.model_type not in LLAMA_TYPES:
        raise ValueError(f"convert() needs a Llama-architecture checkpoint; {path} has model_type={src.model_type!r}")
    n = src.num_hidden_layers
    if isinstance(ladder_layers, int) and not 0 <= ladder_layers <= n:
        raise ValueError(f"ladder_layers={ladder_layers} but the checkpoint has only {n} layers")
    kw = {k: v for k, v in src.to_dict().items() if k in LlamaConfig.__dataclass_fields__}
    cfg = LadderLlamaConfig(**{**kw, "wiring": wiring, "ladder_layers": ladder_layers,
                               "architectures": ["LadderLlamaForCausalLM"]})
    if not any(path.glob("*.safetensors")):
        raise FileNotFoundError(f"no *.safetensors weights in {path}")
    # transformers' own loader: meta-device init and shard-by-shard loading, so an 8B model is not first
    # materialised with random weights (the parameter names are Llama's, hence loadable unchanged)
    model, info = LadderLlamaForCausalLM.from_pretrained(path, config=cfg, dtype=dtype, output_loading_info=True)
    missing = [m for m in info["missing_keys"] if not (m == "lm_head.weight" and cfg.tie_word_embeddings)]
    unexpected = [u for u in info["unexpected_keys"] if not u.endswith("rotary_emb.inv_freq")]
    if missing or unexpected or info.get("mismatched_keys"):
        raise ValueError(f"checkpoint {path} does not match a Llama of its config: missing {sorted(missing)}, "
                         f"unexpected {sorted(unexpected)}, mismatched {info.get('mismatched_keys')}")
    return model.to(device).eval()
