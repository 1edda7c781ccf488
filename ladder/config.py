"""Model shapes and residual wirings.

One frozen dataclass describes a model for *one* device; tensor-parallel local sizes are derived from it
(`ModelConfig.local_sizes`) and never written back, so `config.dim` always means the model's width.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

@dataclass(frozen=True)
class Wiring:
    """What the rest of the package needs to know about one wiring, besides its layer function
    (`ladder.model.LAYER_WIRINGS`). Adding a wiring is one of these plus that function:
    `ladder.model.register_wiring(Wiring(...), layer_fn)`; the model, the TP runtime, the tracer and the
    performance model then all run it."""
    name: str
    # one norm before both modules (the layer has no post-attention norm, and a checkpoint loses it)
    shares_norm: bool = False
    # the wiring whose trained weights it runs: itself for an architecture, "standard" for an inference
    # schedule of the standard model (upper_bound drops the all-reduces, two_batch splits the batch)
    weights_of: str | None = None
    # composed per layer from other wirings (hybrid: `ladder_layers` decides which layers are ladder)
    per_layer: bool = False
    # a residual dataflow chapter 1 draws; two-batch overlap keeps the standard dataflow and changes the schedule
    residual: bool = True
    # the batch is run in this many parts, each module and all-reduce once per part (two-batch overlap: 2)
    batch_parts: int = 1

    @property
    def architecture(self) -> str:
        return self.weights_of or self.name


WIRING_SPECS: dict[str, Wiring] = {w.name: w for w in (
    Wiring("standard"),
    Wiring("parallel", shares_norm=True),
    Wiring("ladder"),
    Wiring("hybrid", per_layer=True),
    Wiring("upper_bound", weights_of="standard"),
    # ladder's exact rival: the batch split in two halves whose all-reduces run behind each other's compute
    Wiring("two_batch", weights_of="standard", residual=False, batch_parts=2),
)}
# The built-in wirings (chapter 1 draws the residual ones); tables and figures list these.
RESIDUAL_WIRINGS = tuple(w.name for w in WIRING_SPECS.values() if w.residual)
WIRINGS = tuple(WIRING_SPECS)


@dataclass(frozen=True)
class ModelConfig:
    n_layers: int
    dim: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int
    rope_theta: float = 10000.0
    # Llama-3.1 style scaling: {"factor", "low_freq_factor", "high_freq_factor",
    # "original_max_position_embeddings"}; None for plain RoPE.
    rope_scaling: dict | None = field(default=None, hash=False, compare=True)
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    max_seq_len: int = 2048
    # How the residual stream is wired (see ladder/model.py, the `*_layer` functions).
    wiring: str = "standard"
    # Only for wiring="hybrid": an int N (the last N layers are ladder) or an explicit list of layer indices.
    ladder_layers: int | tuple[int, ...] = 0

    def __post_init__(self):
        for name in ("n_layers", "dim", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim={self.dim} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.wiring not in WIRING_SPECS:
            raise ValueError(f"unknown wiring {self.wiring!r}; choose one of {', '.join(WIRING_SPECS)}")
        if isinstance(self.ladder_layers, list):
            object.__setattr__(self, "ladder_layers", tuple(self.ladder_layers))
        if not self.spec.per_layer and self.ladder_layers not in (0, ()):
            raise ValueError(f"ladder_layers is only meaningful with wiring='hybrid' (got wiring={self.wiring!r})")
        self.ladder_layer_indices()  # validates

    @property
    def spec(self) -> Wiring:
        return WIRING_SPECS[self.wiring]

    def rewired(self, wiring: str, ladder_layers: int | tuple[int, ...] = 0) -> "ModelConfig":
        """This model with another wiring. The one place the hybrid rule lives: `ladder_layers` (the top N
        layers, or explicit indices) applies to the hybrid and is dropped for every other wiring."""
        per_layer = WIRING_SPECS[wiring].per_layer if wiring in WIRING_SPECS else False
        return self.replace(wiring=wiring, ladder_layers=ladder_layers if per_layer else 0)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def ladder_layer_indices(self) -> tuple[int, ...]:
        """Indices of the layers that use the ladder dataflow."""
        if self.wiring == "ladder":
            return tuple(range(self.n_layers))
        if not self.spec.per_layer:
            return ()
        n = self.ladder_layers
        if isinstance(n, int):
            if not 0 <= n <= self.n_layers:
                raise ValueError(f"ladder_layers={n} must be between 0 and n_layers={self.n_layers}")
            return tuple(range(self.n_layers - n, self.n_layers))
        bad = [i for i in n if not 0 <= i < self.n_layers]
        if bad:
            raise ValueError(f"ladder_layers has indices {bad} outside 0..{self.n_layers - 1}")
        return tuple(sorted(set(n)))

    def layer_wirings(self) -> list[str]:
        """The dataflow of each layer: a hybrid is ladder on its ladder layers and standard elsewhere."""
        if not self.spec.per_layer:
            return [self.wiring] * self.n_layers
        ladder = set(self.ladder_layer_indices())
        return ["ladder" if i in ladder else "standard" for i in range(self.n_layers)]

    def local_sizes(self, tp: int) -> dict[str, int]:
        """Per-rank sizes at tensor-parallel degree `tp`; refuses shapes that do not divide."""
        if tp < 1:
            raise ValueError(f"tensor-parallel size must be >= 1, got {tp}")
        for name in ("n_heads", "n_kv_heads", "ffn_dim"):
            if getattr(self, name) % tp:
                raise ValueError(
                    f"{name}={getattr(self, name)} is not divisible by the tensor-parallel size {tp}; "
                    f"attention is sharded by (KV) heads and the MLP by its hidden size")
        return {"n_heads": self.n_heads // tp, "n_kv_heads": self.n_kv_heads // tp, "ffn_dim": self.ffn_dim // tp}

    def num_params(self, include_embeddings: bool = True) -> int:
        d, h = self.dim, self.head_dim
        attn = d * (self.n_heads * h) * 2 + d * (self.n_kv_heads * h) * 2
        mlp = 3 * d * self.ffn_dim
        norms = d if self.spec.shares_norm else 2 * d
        n = self.n_layers * (attn + mlp + norms) + d
        if include_embeddings:
            n += self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return n

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if isinstance(d["ladder_layers"], tuple):
            d["ladder_layers"] = list(d["ladder_layers"])
        return d


LLAMA31_ROPE_SCALING = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 8192}

# The paper's shapes (ladder-residual.md, "Shapes used by the paper") and small ones that run on a CPU.
PRESETS: dict[str, dict] = {
    # from-scratch models (StarCoder tokenizer, tied embeddings)
    "1B": dict(n_layers=40, dim=1536, n_heads=24, n_kv_heads=24, ffn_dim=4096, vocab_size=49152,
               rope_theta=1e4, tie_embeddings=True),
    "3B": dict(n_layers=40, dim=2304, n_heads=36, n_kv_heads=36, ffn_dim=9216, vocab_size=49152,
               rope_theta=1e4, tie_embeddings=True),
    # the paper's inference benchmark used 32 heads for the 3B so that TP = 8 divides them
    "3B-32h": dict(n_layers=40, dim=2304, n_heads=32, n_kv_heads=32, ffn_dim=9216, vocab_size=49152,
                   rope_theta=1e4, tie_embeddings=True),
    "llama3-8B": dict(n_layers=32, dim=4096, n_heads=32, n_kv_heads=8, ffn_dim=14336, vocab_size=128256,
                      rope_theta=5e5),
    "codellama-34B": dict(n_layers=48, dim=8192, n_heads=64, n_kv_heads=8, ffn_dim=22016, vocab_size=32000,
                          rope_theta=1e6),
    "llama3-70B": dict(n_layers=80, dim=8192, n_heads=64, n_kv_heads=8, ffn_dim=28672, vocab_size=128256,
                       rope_theta=5e5),
    # the paper's 405B shape has 16 KV heads (so TP = 16 divides them); Meta's release has 8
    "llama3.1-405B": dict(n_layers=126, dim=16384, n_heads=128, n_kv_heads=16, ffn_dim=53248,
                          vocab_size=128256, rope_theta=5e5, rope_scaling=LLAMA31_ROPE_SCALING),
    # CPU-sized shapes
    "tiny": dict(n_layers=4, dim=64, n_heads=4, n_kv_heads=2, ffn_dim=128, vocab_size=256, max_seq_len=256),
    "cpu-small": dict(n_layers=6, dim=256, n_heads=8, n_kv_heads=4, ffn_dim=704, vocab_size=8192,
                      max_seq_len=512, tie_embeddings=True),
    "cpu-bench": dict(n_layers=8, dim=1024, n_heads=16, n_kv_heads=8, ffn_dim=2816, vocab_size=8192,
                      max_seq_len=1024),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A named shape, optionally with fields overridden (e.g. `preset("llama3-70B", wiring="ladder")`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown ModelConfig field(s) {sorted(unknown)}")
    return ModelConfig(**{**PRESETS[name], **overrides})
