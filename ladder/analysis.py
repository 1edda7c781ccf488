"""The method made visible: what each wiring's modules read, and how stale a ladder module's input is.

* `dataflow_table` and `draw_wirings` show `ladder.trace.trace_wiring`, which runs the real wiring functions
  of ladder/model.py on symbolic tensors, so the table and diagram are read off the code, not drawn by hand.
* `tp_equivalence` checks on local gloo processes that every wiring gives the same logits at TP = 2 as
  at TP = 1 (except the upper bound, which is not a valid model at TP > 1).
* `stale_input_stats` measures, layer by layer on a pretrained checkpoint, how much each module changes
  the residual stream and how close the stream a ladder module reads is to the one a standard module reads.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import ModelConfig, preset
from .launch import launch_local
from .model import Transformer, build_model
from .paths import data_path
from .trace import WIRINGS, trace_log, trace_wiring  # noqa: F401  (chapter 1 calls analysis.trace_wiring)
from .verify import cached_logits
# pandas, matplotlib, transformers and ladder.hf (which imports transformers) are imported inside the functions that
# use them: importing ladder.analysis does not load them.

def dataflow_table(n_layers: int = 2):
    """`trace_wiring` for every wiring as a pandas DataFrame: one row per module, one column per wiring;
    each cell says which earlier outputs the module's input misses and how its all-reduce runs."""
    import pandas as pd
    cells = {}
    for w in WIRINGS:
        for r in trace_wiring(w, n_layers):
            seen = "misses " + " + ".join(r["missing"]) if r["missing"] else "sees all"
            ar = r["all_reduce"] + (" (shared with " + " + ".join(r["shares_all_reduce_with"]) + ")"
                                    if r["shares_all_reduce_with"] else "")
            cells.setdefault(r["module"], {})[w] = f"{seen}; AR {ar}"
    df = pd.DataFrame.from_dict(cells, orient="index")[list(WIRINGS)]
    df.index.name = "module"
    return df


AR_COLORS = {"blocking": "#c0392b", "overlapped": "#27ae60", "none": "#7f8c8d"}


def draw_wirings(n_layers: int = 2, axes=None):
    """Draw the five dataflows side by side (from `trace_wiring`).

    The residual stream runs down the left of each panel; node k holds the first k module outputs.
    Each module reads from a node (grey arrow) and adds its output to a later node (coloured arrow:
    red = blocking all-reduce, green = overlapped, grey = none). A ladder module's read arrow starts one
    node above the one a standard module reads from: the stale input.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    if axes is None:
        _, axes = plt.subplots(1, len(WIRINGS), figsize=(2.5 * len(WIRINGS), 1.3 + 1.1 * 2 * n_layers))
    titles = {"standard": "standard", "parallel": "parallel (PaLM)", "ladder": "ladder",
              "hybrid": f"hybrid (last {n_layers - 1} ladder)" if n_layers > 2 else "hybrid (last layer ladder)",
              "upper_bound": "upper bound (no AR)"}
    for ax, wiring in zip(axes, WIRINGS):
        recs = trace_wiring(wiring, n_layers)
        names = [r["module"] for r in recs]
        n = len(names)
        # a module's output is in the stream from node (1 + index of the last output in its all-reduce)
        write = {r["module"]: 1 + max(names.index(m) for m in [r["module"], *r["shares_all_reduce_with"]])
                 for r in recs}
        nodes = sorted({0, *write.values()})
        for k in nodes:
            ax.plot(0, -k, "o", color="black", ms=5, zorder=3)
            ax.text(-0.12, -k, f"x{k}", ha="right", va="center", fontsize=8)
        ax.plot([0, 0], [0, -n], color="black", lw=2, zorder=1)
        for i, r in enumerate(recs):
            shared = r["shares_all_reduce_with"]
            x = 1.0 + (0.9 if shared and names.index(shared[0]) < i else 0.0)
            y = -(write[r["module"]] - 0.5) if shared else -(i + 0.5)
            read_node = len(r["reads"]) - 1
            is_attn = r["module"].startswith("attn")
            ax.add_patch(FancyBboxPatch((x - 0.32, y - 0.2), 0.64, 0.4, boxstyle="round,pad=0.02",
                                        fc="#dbe9f6" if is_attn else "#fde9d9", ec="black", lw=0.8))
            ax.text(x, y, r["module"], ha="center", va="center", fontsize=8)
            stale = bool(r["missing"])
            ax.add_patch(FancyArrowPatch((0, -read_node), (x - 0.32, y + 0.05), arrowstyle="-|>",
                                         mutation_scale=8, color="#e67e22" if stale else "#555555",
                                         lw=1.6 if stale else 0.9, linestyle="--" if stale else "-"))
            ax.add_patch(FancyArrowPatch((x - 0.32, y - 0.1), (0, -write[r["module"]]), arrowstyle="-|>",
                                         mutation_scale=8, color=AR_COLORS[r["all_reduce"]], lw=1.4,
                                         connectionstyle="arc3,rad=-0.25"))
        ax.set_title(titles[wiring], fontsize=10)
        ax.set_xlim(-0.45, 2.25)
        ax.set_ylim(-n - 0.4, 0.4)
        ax.axis("off")
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=c, lw=1.6, label=f"all-reduce: {k}") for k, c in AR_COLORS.items()]
    handles.append(Line2D([], [], color="#e67e22", lw=1.6, ls="--", label="stale read (misses an output)"))
    axes[0].figure.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    axes[0].figure.subplots_adjust(bottom=0.12)
    return axes


# --------------------------------------------------------------------------------------------- TP check
def _weights_for(config: ModelConfig, state_dict: dict) -> dict:
    """A wiring with one shared norm per layer (parallel): drop the checkpoint's post-attention norms."""
    if not config.spec.shares_norm:
        return state_dict
    return {k: v for k, v in state_dict.items() if "post_attention_layernorm" not in k}


def _tp_all_wirings(comm, configs, state_dict, tokens, prefill_len):
    """Worker for `tp_equivalence`: cached logits (rank 0 keeps them) and collective counts per wiring."""
    out = {}
    for name, cfg in configs.items():
        logits, n = cached_logits(cfg, _weights_for(cfg, state_dict), tokens, prefill_len, comm)
        out[name] = (logits if comm.rank == 0 else None, n)
    return out


# tp_equivalence's and stale_input_stats's columns on the page (ladder.tables.styled)
TP_CHECK_LABELS = {"max_abs_diff": "max |Δ logit| vs TP = 1", "all_reduces": "all-reduces per rank",
                   "all_reduces_per_layer_step": "all-reduces per layer and step",
                   "ranks_agree_on_count": "ranks launch the same number", "should_match": "should match TP = 1"}
TP_CHECK_FORMATS = {"max_abs_diff": "{:.1e}", "all_reduces_per_layer_step": "{:g}"}
STALE_LABELS = {"update_ratio": "update ratio ‖h_i‖ / ‖x_i‖", "stream_cos": "cos(stream read): ladder vs standard",
                "output_cos": "cos(module output): stale vs fresh input"}


def tp_equivalence(config: ModelConfig, state_dict: dict, tokens: torch.Tensor, prefill_len: int,
                   tp: int = 2, wirings=WIRINGS, ladder_layers: int | None = None):
    """Compare every wiring's cached logits at TP = `tp` (local gloo processes) with TP = 1.

    The parallel wiring loads the checkpoint without its post-attention norms (it shares one norm).
    Returns a DataFrame: wiring, max |logits_TP - logits_1|, all-reduces launched per rank over the
    prefill and decode steps, all-reduces per layer per forward step, and whether the two should agree.
    """
    import pandas as pd
    n_half = ladder_layers if ladder_layers is not None else config.n_layers // 2
    configs = {w: config.rewired(w, n_half) for w in wirings}
    ref = {w: cached_logits(c, _weights_for(c, state_dict), tokens, prefill_len)[0] for w, c in configs.items()}
    ranks = launch_local(_tp_all_wirings, tp, configs, state_dict, tokens, prefill_len)
    steps = 1 + tokens.shape[1] - prefill_len
    rows = []
    for w in wirings:
        logits, n = ranks[0][w]
        rows.append({"wiring": w, "max_abs_diff": float((logits - ref[w]).abs().max()),
                     "all_reduces": n, "all_reduces_per_layer_step": n / (steps * config.n_layers),
                     "ranks_agree_on_count": len({r[w][1] for r in ranks}) == 1,
                     "should_match": w != "upper_bound"})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- stale input
def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.float(), b.float(), dim=-1)


@torch.inference_mode()
def stale_input_stats(model: Transformer, tokens: torch.Tensor):
    """Per layer and module of a *standard* model: how much it changes the stream, and how stale a
    ladder module's input would be.

    Follows the standard forward pass; for module i with input stream x_i (what a standard module reads)
    and output h_i, the ladder module reads x_i - h_{i-1} (the stream without the previous module's
    output). Columns, averaged over tokens:
      update_ratio  ||h_i|| / ||x_i||
      stream_cos    cos(x_i, x_i - h_{i-1})       (1 for layer 0's attention, which has no predecessor)
      output_cos    cos(h_i(x_i), h_i(x_i - h_{i-1}))  (the module's output on the stale vs fresh input)
    """
    import pandas as pd
    if model.comm.size != 1:
        raise ValueError("stale_input_stats needs an unsharded model (comm.size == 1)")
    t = tokens.shape[1]
    dtype = model.embed_tokens.weight.dtype
    ctx = {"cos": model.rope_cos[:t].to(dtype), "sin": model.rope_sin[:t].to(dtype)}
    x = model.embed_tokens(tokens)
    prev = None
    rows = []
    for layer, block in enumerate(model.layers):
        modules = (("attention", lambda h: block.attention(block.input_layernorm(h), **ctx)),
                   ("mlp", lambda h: block.feed_forward(block.post_attention_layernorm(h))))
        for kind, fn in modules:
            h = fn(x)
            stale = x if prev is None else x - prev
            h_stale = h if prev is None else fn(stale)
            rows.append({"layer": layer, "module": kind,
                         "update_ratio": float((h.norm(dim=-1) / x.norm(dim=-1)).mean()),
                         "stream_cos": float(_cos(x, stale).mean()),
                         "output_cos": float(_cos(h, h_stale).mean())})
            x, prev = x + h, h
    return pd.DataFrame(rows)


def stale_summary(stale) -> dict:
    """The numbers the chapter cites from `stale_input_stats`'s table: the mean update ratio, and the lowest
    and mean stream cosine and the mean output cosine of every module but layer 0's attention (which has no
    previous module, so its stale input is its fresh one)."""
    later = stale[(stale.layer > 0) | (stale.module != "attention")]
    return {"mean_update_ratio": float(stale.update_ratio.mean()),
            "min_stream_cos": float(later.stream_cos.min()), "mean_stream_cos": float(later.stream_cos.mean()),
            "mean_output_cos": float(later.output_cos.mean())}


def plot_stale(stale, title: str):
    """`stale_input_stats`'s three measures along depth, one panel each (STALE_LABELS as titles), attention
    and MLP as two lines. Returns the figure."""
    import seaborn as sns
    measures = list(STALE_LABELS)
    long = stale.melt(id_vars=["layer", "module"], value_vars=measures, var_name="measure", value_name="value")
    g = sns.relplot(data=long, x="layer", y="value", hue="module", col="measure", kind="line", marker="o",
                    height=3.0, aspect=1.15, facet_kws={"sharey": False})
    for ax, key in zip(g.axes.flat, measures):
        ax.set_title(STALE_LABELS[key], fontsize=10)
        ax.set(xlabel="layer", ylabel="")
        ax.set_xticks(sorted(stale.layer.unique()))
    g.figure.suptitle(title, y=1.03)
    return g.figure


# --------------------------------------------------------------------------------------------- inputs
HUB_FALLBACK = "HuggingFaceTB/SmolLM2-135M"  # a small Llama-architecture checkpoint on the hub (Colab/Binder)
_FALLBACK_TEXT = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park "
                  "with her friends. One day, she found a big red ball under a tree. She asked her mom if she "
                  "could keep it, and her mom said yes. Lily was so happy that she played with the ball all day.")


def default_checkpoint() -> str:
    """The pretrained checkpoint the architecture notebook analyses: stories260K from the offline data
    folder ($LADDER_DATA/models/stories260K/hf) when present, else a small Llama from the hub."""
    try:  # checked against the manifest (a corrupt copy is named; a mistyped LADDER_DATA is an error)
        p = data_path("models", "stories260K", "hf")
    except FileNotFoundError:
        return HUB_FALLBACK
    return str(p) if (p / "config.json").is_file() else HUB_FALLBACK


def sample_tokens(checkpoint: str, n_tokens: int, batch: int = 1) -> torch.Tensor:
    """`batch` x `n_tokens` token ids of real English text (the TinyStories sample when available),
    tokenised with the checkpoint's own tokenizer."""
    from transformers import AutoTokenizer

    from .hf import resolve_checkpoint
    try:
        text = data_path("text", "tinystories_sample", "tinystories_sample.txt").read_text()
    except (FileNotFoundError, OSError):
        text = _FALLBACK_TEXT
    tok = AutoTokenizer.from_pretrained(resolve_checkpoint(checkpoint))
    ids = tok(text, verbose=False)["input_ids"]  # the whole sample, longer than the model's window
    need = n_tokens * batch
    ids = (ids * (need // len(ids) + 1))[:need]
    return torch.tensor(ids).view(batch, n_tokens)


def tp_check_model(checkpoint: str, tp: int, max_seq_len: int):
    """(config, full state dict, description) for the TP check: the checkpoint when its heads and MLP
    divide by `tp`, else random N(0, 0.02) weights of the `tiny` preset."""
    from transformers import AutoConfig

    from .hf import config_from_hf, load_hf_state_dict, resolve_checkpoint
    path = resolve_checkpoint(checkpoint)
    config = config_from_hf(AutoConfig.from_pretrained(path), max_seq_len=max_seq_len)
    try:
        config.local_sizes(tp)
        return config, load_hf_state_dict(path), f"pretrained weights of {path.name if path.name != 'hf' else path.parent.name}"
    except ValueError:
        config = preset("tiny", max_seq_len=max_seq_len)
        return config, build_model(config).state_dict(), "random weights (tiny preset; checkpoint does not split)"
