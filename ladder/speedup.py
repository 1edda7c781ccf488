"""The speed chapter's logic: what it measures, from the notebook's parameters (`chapter_runs`, run by
`chapter_measure` with ladder.bench, and sized before a GPU run by `estimate_s`); recovery estimators with
confidence intervals, the performance model against the paper's tables, and the `claims` block of
data/results/<profile>/speedup.json; and chapter 4's hybrid speed-ups (claim H8: `hybrid_configs`,
`hybrid_table`).

Every paper number is read from ladder/paper/*.csv (`ladder.paths.paper_table`). A claims entry
(`ladder.claims.ClaimEntry`: `measured_entry`, `hybrid_entry`, `model_entries`) holds measured (or
modelled) quantities only; verdicts are computed elsewhere (ladder/claims.py).

Estimators. The benchmark takes its samples round-robin (`interleave=True`): sample k of standard, ladder
and upper bound ran at about the same time, under the same load. A *round* is such a triple. From n
rounds:
  speedup              median(ladder) / median(standard)
  upper_bound_speedup  median(upper) / median(standard)
  recovered            (speedup - 1) / (upper_bound_speedup - 1)
  comm_share           1 - median(standard) / median(upper)
and their 95% intervals by the paired-round bootstrap: resample whole rounds with replacement (so the
pairing, and the shared load drift, is kept), recompute each statistic, take the 2.5/97.5 percentiles.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
from pathlib import Path

import torch

from . import perfmodel as pm
from .bench import DTYPES, BenchConfig, read_records, run_local, run_torchrun, start_records
from .paths import paper_table
from .claims import ClaimEntry
from .link import PRESETS as LINKS
from .link import WARM_UP_S
from .link import get as get_link
from .stats import bootstrap
from .trace import n_allreduces
# pandas, matplotlib, transformers and ladder.hf (which imports transformers) are imported inside the functions that
# use them: importing ladder.speedup does not load them.

FIELDS = ("speedup", "upper_bound_speedup", "recovered", "comm_share")


# --------------------------------------------------------------------------------------------- estimators
def ratios(standard: list[float], ladder: list[float], upper: list[float]) -> dict[str, float]:
    """The four speed statistics from tokens/s samples (medians of each wiring)."""
    if not standard or not ladder or not upper:
        raise ValueError("ratios needs at least one sample of standard, ladder and upper bound")
    s, l, u = (statistics.median(x) for x in (standard, ladder, upper))
    sp, ub = l / s, u / s
    return {"speedup": sp, "upper_bound_speedup": ub,
            "recovered": (sp - 1) / (ub - 1) if ub != 1 else float("nan"), "comm_share": 1 - s / u}


def paired_bootstrap(rounds: list[tuple[float, float, float]], n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, list[float]]:
    """95% (or `level`) intervals of `ratios` by resampling whole rounds (standard, ladder, upper) with
    replacement. One round gives a zero-width interval at the point estimate."""
    if not rounds:
        raise ValueError("paired_bootstrap needs at least one round")
    if any(len(r) != 3 for r in rounds):
        raise ValueError("each round must be (standard, ladder, upper_bound) tokens/s")
    return bootstrap(rounds, statistic=lambda pick: ratios(*map(list, zip(*pick))), n_boot=n_boot, seed=seed,
                     level=level)


def rounds_of(records: list[dict], **match) -> list[tuple[float, float, float]]:
    """(standard, ladder, upper bound) tokens/s per measurement round, from benchmark records whose fields
    equal `match` (e.g. set="virtual", link_name="fast", tp=2, batch=1). The upper bound ignores the link
    (it has no all-reduce), so it may come from any link's run."""
    pick = {}
    for r in records:
        if r["wiring"] not in ("standard", "ladder", "upper_bound"):
            continue
        if all(r.get(k) == v for k, v in match.items() if not (k == "link_name" and r["wiring"] == "upper_bound")):
            pick.setdefault(r["wiring"], r["samples_tokens_per_s"])
    if len(pick) < 3:
        return []
    return list(zip(pick["standard"], pick["ladder"], pick["upper_bound"]))


def measured_entry(rounds, evidence: str, what: str, how: str, quantity: str = "speedup",
                   hidden: tuple[float, list[float]] | None = None, **extra) -> ClaimEntry:
    """The claims entry of a measured speed-up (H1-H3; `quantity="comm_share"`: H4's share of standard's time
    spent in all-reduces): point estimates, paired-bootstrap CIs (from 2 rounds on: one round has no spread),
    n (the rounds; the rule, not this builder, decides how many are enough) and the "ours" text of the claims
    table: the numbers, then `what` was measured.

    `hidden` = (share, [lo, hi]): the share of standard's link wait that ladder hides, measured on a virtual
    clock (ladder.replay.hidden_share). It replaces the recovered share computed from the three step times:
    the wirings do the same compute, so the upper bound's gain is standard's link wait, and the wait is
    measured exactly where the step times carry the compute's run-to-run noise."""
    if quantity not in ("speedup", "comm_share"):
        raise ValueError(f"measured_entry: quantity must be 'speedup' or 'comm_share', got {quantity!r}")
    rounds = list(rounds)
    est = ratios(*map(list, zip(*rounds)))
    ci = paired_bootstrap(rounds) if len(rounds) >= 2 else {}
    if quantity == "comm_share":
        ours = f"{est['comm_share']:.0%} of standard's time is all-reduce"
        if ci:
            ours += f" (95% CI {ci['comm_share'][0]:.0%}-{ci['comm_share'][1]:.0%}, {len(rounds)} rounds)"
    else:
        ours = f"{est['speedup']:.2f}x"
        if ci:
            ours += f" (95% CI {ci['speedup'][0]:.2f}-{ci['speedup'][1]:.2f}, {len(rounds)} rounds)"
        else:
            ours += " (1 round, no interval)"  # ratios() refuses no rounds; from 2 on there is a CI
        if hidden is not None:
            est["recovered"] = hidden[0]
            if ci:
                ci["recovered"] = list(hidden[1])
            ours += f", {hidden[0]:.0%} of the link wait hidden"
        elif est.get("recovered") is not None and est["recovered"] == est["recovered"]:
            ours += f", {est['recovered']:.0%} of the upper bound's gain"
    # what a rule reads is an entry field (the regime an emulated link was set to, the replay's error, nodes)
    own = {k: extra.pop(k) for k in ("link_ratio", "replay_error", "nodes") if k in extra}
    return ClaimEntry(evidence=evidence, quantity=quantity, value=est[quantity], ours=f"{ours}: {what}", how=how,
                      n=len(rounds), ci=ci, speedup=est["speedup"], upper_bound_speedup=est["upper_bound_speedup"],
                      recovered=est["recovered"], comm_share=est["comm_share"], **own, extra=extra)


# --------------------------------------------------------------------------------------------- hybrids (H8)
def hybrid_configs(result: dict, *, tp: int = 2, links=(None,), **bench_kw) -> list:
    """ladder.bench configurations for one adaptation result (ladder.adapt.run_adaptation): the source
    (standard wiring) and each retrained hybrid, loaded from their checkpoints into the native TP runtime,
    at TP degree `tp`, for each (emulated) link. `bench_kw` are further BenchConfig fields (batch, ...)."""
    from transformers import AutoConfig
    from .hf import config_from_hf
    base = config_from_hf(AutoConfig.from_pretrained(result["path"]))
    cfgs = []
    for link in links:
        link = None if link in (None, "none", "") else link
        cfgs.append(BenchConfig(preset=base, wiring="standard", tp=tp, link=link, checkpoint=result["path"],
                                **bench_kw))
        for n in result["ladder_layers"]:
            cfgs.append(BenchConfig(preset=base, wiring="hybrid", ladder_layers=n, tp=tp, link=link,
                                    checkpoint=result["checkpoints"][f"hybrid{n}"], **bench_kw))
    return cfgs


def hybrid_table(records: list[dict]) -> list[dict]:
    """One row per (link, hybrid) from benchmark records: tokens/s of the hybrid and of the standard model
    measured under the same link, their ratio and its 95% CI (`ratio_ci` over the repeated samples)."""
    link_of = lambda r: r["link"]["name"] if r["link"] else "none (measured gloo)"  # bench records' link: dict | None
    std = {link_of(r): r for r in records if r["wiring"] == "standard"}
    rows = []
    for r in records:
        if r["wiring"] != "hybrid":
            continue
        name = link_of(r)
        if name not in std:
            raise ValueError(f"hybrid record on link {name!r} has no standard record to compare with")
        s = std[name]
        rows.append({"link": name, "tp": r["tp"], "ladder_layers": r["ladder_layers"],
                     "standard_tokens_per_s": s["tokens_per_s"], "hybrid_tokens_per_s": r["tokens_per_s"],
                     "speedup": r["tokens_per_s"] / s["tokens_per_s"],
                     "speedup_ci": ratio_ci(r["samples_tokens_per_s"], s["samples_tokens_per_s"]),
                     "step_ms": 1000 * s["decode_s_per_token"], "samples": len(r["samples_tokens_per_s"])})
    return rows


def ratio_ci(a, b, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95% bootstrap interval of median(a) / median(b), resampling the repeated runs of each side on its own
    (the two sides are independent sample sets, not paired rounds)."""
    return bootstrap(a, b, statistic=lambda x, y: statistics.median(x) / statistics.median(y), n_boot=n_boot,
                     seed=seed)


NO_LINK = "none (measured gloo)"  # hybrid_table's link name for a run on the real collective alone


def link_label(row: dict) -> str:
    """How a row's link reads on a page: its a/c on the virtual clock when it was set from a regime's ratio
    (its spec, "custom:A:B", says nothing to a reader), else its name."""
    return f"a/c = {row['a/c']:.2f} (virtual clock)" if "a/c" in row else row["link"]


def hybrid_entry(row: dict, *, ranks: str, batch: int, what: str, device: str = "cpu") -> ClaimEntry:
    """The claim-H8 entry of one `hybrid_table` row, labelled by how it was measured: `ranks="processes"`,
    real gloo processes (on a named link, the emulated link's cost is added to every real collective:
    "cpu-real-processes" either way); `ranks="virtual"`, one rank's shard with its peers and link emulated
    ("cpu-emulated-link", or "gpu1-emulated-link" on a GPU). `what` names the models compared."""
    link = row["link"]
    tp, on_gpu = int(row["tp"]), str(device).startswith("cuda")
    emulated = get_link(None if link == NO_LINK else link)  # get_link: None and "none" are no emulated link
    if ranks == "processes":
        evidence = "multi-gpu" if on_gpu else "cpu-real-processes"
        how = f"{tp} real {'NCCL' if on_gpu else 'gloo'} processes on {device}, ladder.bench"
        if emulated is not None:
            how += (f", plus the emulated link {link} on every all-reduce (at least "
                    f"{emulated.latency(tp) * 1e6:.0f} µs each, on top of the real collective)")
    elif ranks == "virtual":
        evidence = "gpu1-emulated-link" if on_gpu else "cpu-emulated-link"
        how = (f"one rank's shard on {device}, peers emulated (virtual ranks), random weights, ladder.bench, "
               f"emulated link {link}")
    else:
        raise ValueError(f"hybrid_entry: ranks must be 'processes' or 'virtual', got {ranks!r}")
    lo, hi = row["speedup_ci"]
    measure = row.get("measure", "tokens/s")
    ours = (f"{row['speedup']:.2f}x {measure} (95% CI {lo:.2f}-{hi:.2f}, {row['samples']} runs), {what}, "
            f"TP={tp}, link {link_label(row)}; decode step {row['step_ms']:.1f} ms")
    regime = {}
    if "a/c" in row:  # a link set to a regime's a/c on the virtual clock (ladder.replay.hybrid)
        ours += f"; the replay predicts {row['replay_speedup']:.2f}x"
        how += (f", link at a/c = {row['a/c']:.2f} of one module's measured compute, timed on a virtual clock "
                f"(compute = this thread's CPU time; nothing sleeps); decode steps paired by round")
        regime = {"link_ratio": float(row["a/c"]), "replay_error": float(row["replay_error"])}
    return ClaimEntry(evidence=evidence, quantity="speedup", value=float(row["speedup"]), ours=ours, how=how,
                      subject=row.get("model"), n=int(row["samples"]), ci={"speedup": (lo, hi)},
                      speedup=float(row["speedup"]), step_ms=float(row["step_ms"]), **regime,
                      extra={"tp": tp, "batch": int(batch), "link": link, "ladder_layers": int(row["ladder_layers"])})


# --------------------------------------------------------------------------------------------- the paper
def paper_row(tp: int = 8, batch: int = 1) -> dict:
    """One row of the paper's 70B NVLink grid (tokens/s by wiring)."""
    g = paper_table("speed_grid.csv")
    row = g[(g.tp == tp) & (g.batch == batch)]
    if row.empty:
        raise ValueError(f"the paper's grid has no row tp={tp}, batch={batch}")
    return row.iloc[0].to_dict()


def paper_recovered(tp: int = 8, batch: int = 1) -> float:
    """The share of the upper bound's gain the paper's own ladder run kept."""
    r = paper_row(tp, batch)
    return (r["ladder"] / r["standard"] - 1) / (r["upper_bound"] / r["standard"] - 1)


def paper_comm_share(tp: int = 8, batch: int = 1) -> float:
    """1 - standard / upper bound in the paper's grid."""
    r = paper_row(tp, batch)
    return 1 - r["standard"] / r["upper_bound"]


# --------------------------------------------------------------------------------------------- the model
def model_vs_paper(fit_tp: int = 8) -> dict:
    """Calibrate on the paper's TP = `fit_tp` column; compare with every table.

    Returns hw, fab, fit (info), grid (rows with error and sample "in"/"out"), batch (the batch table with
    the model's speedups), sizes (the model-size table), and the mean |error| in and out of sample.
    """
    import pandas as pd
    grid = paper_table("speed_grid.csv")
    hw, fab, fit = pm.calibrate(grid, tp=fit_tp)
    cmp = pd.DataFrame(pm.compare(pm.grid_rows(grid), hw, fab))
    cmp["sample"] = ["in" if tp == fit_tp else "out" for tp in cmp.tp]
    sizes = []
    for _, r in paper_table("speed_model_size.csv").iterrows():
        std = pm.predict(r.preset, hw, int(r.tp), int(r.batch), wiring="standard", link=fab).tokens_per_s
        lad = pm.predict(r.preset, hw, int(r.tp), int(r.batch), wiring="ladder", link=fab).tokens_per_s
        sizes.append({"model": r.model, "paper_standard": r.standard, "model_standard": std,
                      "paper_ladder": r.ladder, "model_ladder": lad, "paper_speedup": r.speedup,
                      "model_speedup": lad / std})
    sizes = pd.DataFrame(sizes)
    bt = paper_table("speed_batch.csv")[["batch", "standard", "ladder", "speedup"]].copy()
    bt["model_speedup"] = [pm.speedup("llama3-70B", hw, fab, fit_tp, int(b)) for b in bt.batch]
    bt["difference"] = bt.model_speedup - bt.speedup
    size_tps_err = pd.concat([sizes.model_standard / sizes.paper_standard - 1,
                              sizes.model_ladder / sizes.paper_ladder - 1]).abs()
    return {"hw": hw, "fab": fab, "fit": fit, "grid": cmp, "batch": bt, "sizes": sizes,
            "in_sample_error": float(cmp[cmp["sample"] == "in"].error.abs().mean()),
            "out_of_sample_error": float(cmp[cmp["sample"] == "out"].error.abs().mean()),
            "size_tokens_per_s_error": float(size_tps_err.mean()),
            "size_speedup_error": float((sizes.model_speedup - sizes.paper_speedup).abs().mean()),
            "batch_table_max_error": float(bt.difference.abs().max())}


SETTINGS = (("70B P2P off", "llama3-70B", 8, "pcie5-nop2p"), ("405B 2 nodes", "llama3.1-405B", 16, "net400g"),
            ("70B NVLink", "llama3-70B", 8, "nvlink4"))


def model_slow_links(hw, fab, batches=(1, 4, 16, 64)):
    """The model's ladder / upper-bound speedups and comm share on slower links, with NCCL's fitted link
    factor and at the links' published rates (factor 1)."""
    import pandas as pd
    rows = []
    for b in batches:
        for name, shape, tp, link in SETTINGS:
            for eff_name, eff in (("fitted", fab.efficiency), ("spec", 1.0)):
                f = pm.Fabric(LINKS[link], eff)
                rows.append({"setting": name, "link factor": eff_name, "batch": b, "tp": tp, "shape": shape,
                             "link": link, "ladder_speedup": pm.speedup(shape, hw, f, tp, b),
                             "upper_bound_speedup": pm.speedup(shape, hw, f, tp, b, wiring="upper_bound"),
                             "comm_share": pm.predict(shape, hw, tp, b, wiring="standard", link=f).comm_share})
    return pd.DataFrame(rows)


def model_entries(mv: dict, slow) -> dict[str, list[ClaimEntry]]:
    """Claims entries from the performance model. In sample: H1's and H4's values, both predicted at the
    70B, TP = 8, batch 1 NVLink point of the column the two efficiencies were fitted on; out of sample: H2
    and H3 (other links, another shape)."""
    hw, fab = mv["hw"], mv["fab"]
    fit = slow["link factor"] == "fitted"
    h1 = float(mv["batch"].model_speedup.iloc[0])
    p2p = slow[fit & (slow.setting == "70B P2P off")]
    big = slow[fit & (slow.setting == "405B 2 nodes")]
    h2, h3 = float(p2p.ladder_speedup.max()), float(big.ladder_speedup.min())
    h4 = float(pm.predict("llama3-70B", hw, 8, 1, wiring="standard", link=fab).comm_share)
    how = "performance model (roofline + alpha-beta link), calibrated on the paper's 70B TP=8 NVLink column"
    at_fit = {"shape": "llama3-70B", "tp": 8, "batch": 1, "link": "nvlink4"}
    return {
        "H1": [ClaimEntry(evidence="model-in-sample", quantity="speedup", value=h1, speedup=h1, how=how,
                          upper_bound_speedup=float(pm.speedup("llama3-70B", hw, fab, 8, 1, wiring="upper_bound")),
                          ours=f"model {h1:.3f}x (fitted on this column)", extra=at_fit)],
        "H2": [ClaimEntry(evidence="model-out-of-sample", quantity="speedup", value=h2, speedup=h2, how=how,
                          ours=f"model, P2P off: up to {h2:.2f}x over batch 1-64",
                          extra={"shape": "llama3-70B", "tp": 8, "link": "pcie5-nop2p",
                                 "batch": int(p2p.batch[p2p.ladder_speedup.idxmax()])})],
        "H3": [ClaimEntry(evidence="model-out-of-sample", quantity="speedup", value=h3, speedup=h3, how=how,
                          ours=f"model, 405B TP=16 two nodes: >= {h3:.2f}x over batch 1-64",
                          extra={"shape": "llama3.1-405B", "tp": 16, "link": "net400g"})],
        "H4": [ClaimEntry(evidence="model-in-sample", quantity="comm_share", value=h4, comm_share=h4, how=how,
                          ours=f"model: {h4:.0%} of standard's time is all-reduce, at the point it was fitted on "
                               f"(paper grid implies {paper_comm_share():.0%})", extra=at_fit)],
    }


def merge(*blocks: dict[str, list]) -> dict[str, list]:
    """Concatenate claims blocks (of ClaimEntry or their dicts) claim by claim."""
    out: dict[str, list[dict]] = {}
    for b in blocks:
        for k, v in b.items():
            out.setdefault(k, []).extend(v if isinstance(v, list) else [v])
    return out


# --------------------------------------------------------------------------------------------- chapter 2 on GPUs
def recovery_table(records: list[dict]):
    """Per (set, link, TP, batch) of a grid measurement (`chapter_measure`): ladder's speed-up,
    the upper bound's, the share of its gain ladder recovers and standard's communication share, medians
    over rounds with paired-bootstrap 95% intervals, formatted for reading."""
    import pandas as pd
    groups = sorted({(r["set"], r["link_name"], r["tp"], r["batch"]) for r in records if r["wiring"] == "ladder"})
    rows = []
    for sset, lname, tp, batch in groups:
        rounds = rounds_of(records, set=sset, link_name=lname, tp=tp, batch=batch)
        if not rounds:
            continue
        est = ratios(*map(list, zip(*rounds)))
        ci = paired_bootstrap(rounds)
        rows.append({"set": sset, "link": lname, "TP": tp, "batch": batch, "rounds": len(rounds),
                     "ladder speed-up (95% CI)": f"{est['speedup']:.2f} ({ci['speedup'][0]:.2f}–{ci['speedup'][1]:.2f})",
                     "upper bound speed-up": f"{est['upper_bound_speedup']:.2f}",
                     "recovered (95% CI)": f"{est['recovered']:.0%} ({ci['recovered'][0]:.0%}–{ci['recovered'][1]:.0%})",
                     "communication share": f"{est['comm_share']:.0%}"})
    return pd.DataFrame(rows)


def grid_entries(records: list[dict], *, grid, preset_name: str, main_link: str, links: dict, device: str,
                 mode: str, extra_shapes=()) -> dict[str, list[ClaimEntry]]:
    """Claims entries of a GPU grid measurement at the grid's first point (the paper's headline setting): H1
    on the main link, H2 on the other; one GPU with the link emulated on it (`mode` local, `device` cuda)
    or real NCCL on GPU nodes (`mode` torchrun: H1 on NVLink, H2 with peer-to-peer off); H3 from a 405B rank
    at TP = 16 (one GPU, emulated two-node link)."""
    tp0, b0 = grid[0]
    out: dict[str, list[ClaimEntry]] = {}
    what = f"{preset_name}, TP={tp0}, batch {b0}"
    if mode == "torchrun":
        for cid, lname in (("H1", "nvlink"), ("H2", "nccl_p2p_disable")):
            r = rounds_of(records, set="nccl", link_name=lname, tp=tp0, batch=b0)
            if r:
                out[cid] = [measured_entry(r, "multi-gpu", f"{what}, {lname}", "GPUs, torchrun, real NCCL",
                                           shape=preset_name, tp=tp0, batch=b0, link=lname)]
        return out
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") and torch.cuda.is_available() else device
    how = f"one {gpu} computing one rank's shard, its peers emulated; every all-reduce a spin kernel of the link's time"
    sets = {r["set"] for r in records}
    main_set = next((s for s in sets if s not in ("processes",) and not s.startswith("extra:")), None)
    for cid, lname in (("H1", main_link), ("H2", next((k for k in links if k != main_link), None))):
        r = rounds_of(records, set=main_set, link_name=lname, tp=tp0, batch=b0) if lname else []
        if r:
            out[cid] = [measured_entry(r, "gpu1-emulated-link", f"{what}, emulated link {links[lname]}", how,
                                       shape=preset_name, tp=tp0, batch=b0, link=links[lname])]
    for x in extra_shapes:
        r = rounds_of(records, set=f"extra:{x['preset']}", tp=x["tp"], batch=x["batch"])
        if r and x["tp"] == 16:
            out["H3"] = [measured_entry(r, "gpu1-emulated-link", f"{x['preset']}, one rank of TP={x['tp']}, "
                                        f"batch {x['batch']}, emulated link {x['link']}", how, shape=x["preset"],
                                        tp=x["tp"], batch=x["batch"], link=x["link"])]
    return out


def plot_model_vs_paper(mv: dict):
    """Two panels: the model's tokens/s against the paper's for every wiring of the 70B grid (in and out of
    the column it was fitted on), and ladder's speed-up by batch at TP = 8, paper and model."""
    import matplotlib.pyplot as plt
    cmp, bt = mv["grid"], mv["batch"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for sample, marker in (("in", "o"), ("out", "^")):
        part = cmp[cmp["sample"] == sample]
        ax[0].scatter(part.tokens_per_s, part.predicted, marker=marker,
                      label="TP = 8 (fitted on)" if sample == "in" else "TP = 2 and 4 (out of sample)")
    lim = [cmp.tokens_per_s.min() * 0.8, cmp.tokens_per_s.max() * 1.2]
    ax[0].plot(lim, lim, "k--", lw=0.8)
    ax[0].set(xscale="log", yscale="log", xlabel="paper (tokens/s)", ylabel="model (tokens/s)",
              title="Llama-3-70B grid, every wiring")
    ax[0].legend(fontsize=8)
    ax[1].plot(bt.batch, bt.speedup, "o-", label="paper")
    ax[1].plot(bt.batch, bt.model_speedup, "s--", label="model")
    ax[1].set(xscale="log", xlabel="batch", ylabel="ladder speed-up over standard", title="Llama-3-70B, TP = 8")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- chapter 2's plan and measurement
def check_link_params(links_param, main_link) -> None:
    """Chapter 2's `links` (name -> ladder.link spec) and `main_link` (one of those names) parameters, checked
    before anything runs: one error naming the parameter and the valid names instead of a bare KeyError."""
    valid = ", ".join(LINKS)
    if not isinstance(links_param, dict) or not links_param:
        raise ValueError(f"parameter `links` must map names to links, e.g. {{'fast': 'nvlink4'}}; got "
                         f"{links_param!r}")
    for name, spec in links_param.items():
        try:
            get_link(spec)
        except ValueError:
            raise ValueError(f"parameter `links`: {name!r} -> {spec!r} is not a link; use one of {valid}, "
                             "'custom:ALPHA_S:BANDWIDTH_BPS[:STEP_S]' or None") from None
    if main_link not in links_param:
        raise ValueError(f"parameter `main_link` is {main_link!r}, not one of the names in parameter `links`: "
                         f"{', '.join(map(str, links_param))}")


INTERLEAVE_BY = ("tp", "batch")  # chapter 2: one round-robin group per grid point (each statistic is within one)


def chapter_runs(*, preset_name, model_overrides, grid, wirings, hybrid_layers, prompt_len, new_tokens, dtype,
                 warmup, samples, compile, device, links, main_link, ranks, check_processes,
                 extra_shapes) -> list[tuple[str, list[BenchConfig]]]:
    """Chapter 2's measurements in local mode (CPU, or one GPU with virtual ranks), from its parameters:
    (set name, configurations) per `run_local` call, in the order they run. The grid's first point is
    where claims H1/H2 are judged; extra shapes (e.g. one 405B rank for H3) and the real-process check
    follow, each its own call."""
    check_link_params(links, main_link)
    base = dict(preset=preset_name, overrides=model_overrides, prompt_len=prompt_len, new_tokens=new_tokens,
                dtype=dtype, warmup=warmup, samples=samples, compile=compile, device=device)
    main = []
    for tp, batch in grid:
        for name, spec in links.items():
            for w in wirings:
                if w == "upper_bound" and name != main_link:
                    continue  # no all-reduce: the link does not matter
                main.append(BenchConfig(**base, tp=tp, batch=batch, wiring=w, link=spec, ranks=ranks,
                                        probe_allreduce=(w == "standard")))
    tp0, b0 = grid[0]
    for n in hybrid_layers:
        main.append(BenchConfig(**base, tp=tp0, batch=b0, wiring="hybrid", ladder_layers=n,
                                link=links[main_link], ranks=ranks))
    plan = [(ranks, main)]
    for x in extra_shapes:  # one shape per call: its weights are freed before the next one is built
        xb = {**base, "preset": x["preset"], "overrides": x.get("overrides", {})}
        plan.append((f"extra:{x['preset']}", [BenchConfig(**xb, tp=x["tp"], batch=x["batch"], wiring=w,
                                                          link=x["link"], ranks=ranks)
                                              for w in ("standard", "ladder", "upper_bound")]))
    if check_processes:
        plan.append(("processes", [BenchConfig(**base, tp=tp0, batch=b0, wiring=w, link=links[main_link],
                                               ranks="processes", probe_allreduce=(w == "standard"))
                                   for w in ("standard", "ladder", "upper_bound")]))
    return plan


# Sizing a GPU run before it runs (issue 18: the gpu1 chapter must fit its share of a 15-minute session).
# Conservative on purpose: every all-reduce is charged in full, as if nothing overlapped (the standard
# wiring's time; ladder's is lower), and compute runs at ESTIMATE_EFFICIENCY of the datasheet roofline
# (ladder.perfmodel.module_costs) - the roofline test's floor; the compiled 70B-rank step reached 46% on an
# H200 (reference/gpu.md). ESTIMATE_COMPILE_S per (shape, batch): reference/gpu.md measured ~20 s per batch
# size for the decode shape alone on 16 cores; the benchmark also compiles the prefill shape: twice that.
ESTIMATE_EFFICIENCY = 0.4
ESTIMATE_COMPILE_S = 40.0


def estimate_s(cfgs: list[BenchConfig], hw="H100-SXM", efficiency: float = ESTIMATE_EFFICIENCY,
               compile_s: float = ESTIMATE_COMPILE_S) -> dict:
    """Estimated seconds for `run(cfgs, interleave=True)` of one-GPU (virtual-rank) configurations:
    per configuration (warm-ups + samples) x (prefill + (new_tokens - 1) decode steps, each its compute
    plus all its all-reduces' modelled link time), plus the decode graph's capture (3 steps), the
    all-reduce probe and the link-duration check; plus `compile_s` per distinct (shape, batch) compiled.
    Returns {"configs": [(label, s)], "measure_s", "compile_s", "total_s"}."""
    hw = dataclasses.replace(pm.HARDWARE[hw] if isinstance(hw, str) else hw, efficiency=efficiency)
    rows, compiled = [], set()
    for cfg in cfgs:
        mcfg = cfg.model_config()
        nb = DTYPES[cfg.dtype].itemsize
        cache = cfg.prompt_len + cfg.new_tokens
        lk = get_link(cfg.link)
        n_ar = n_allreduces(mcfg)  # as the wiring code launches them (ladder.trace)
        rows_per_message = -(-cfg.batch // mcfg.spec.batch_parts)  # two-batch overlap sends half-batch messages

        def compute(tokens):
            c = pm.module_costs(mcfg, cfg.tp, cfg.batch, tokens, cache, hw, nb, expand_kv=False)
            return mcfg.n_layers * (c["attn"] + c["mlp"]) + c["head"]

        def ar(tokens):
            return lk.allreduce_time(rows_per_message * tokens * mcfg.dim * nb, cfg.tp) if lk else 0.0

        step = compute(1) + n_ar * ar(1)
        gen = compute(cfg.prompt_len) + n_ar * ar(cfg.prompt_len) + (cfg.new_tokens - 1) * step
        sec = (cfg.warmup + cfg.samples) * gen + 3 * step
        if cfg.probe_allreduce:
            sec += 22 * (ar(1) + ar(cfg.prompt_len))
        if lk and cfg.device.startswith("cuda"):
            sec += 2 * WARM_UP_S + 6 * (ar(1) + ar(cfg.prompt_len))  # link_durations in the record
        if cfg.compile:
            compiled.add((repr(mcfg.replace(wiring="standard", ladder_layers=0)), cfg.tp, cfg.batch, cfg.dtype))
        rows.append((f"{cfg.preset_name} tp={cfg.tp} b={cfg.batch} {cfg.wiring} "
                     f"{lk.name if lk else 'none'}", sec))
    measure = sum(s for _, s in rows)
    comp = compile_s * len(compiled)
    return {"configs": rows, "measure_s": measure, "compile_s": comp, "total_s": measure + comp}


def chapter_measure(*, mode: str, records_path: str | os.PathLike, runs_dir: str | os.PathLike | None = None,
                    p2p_off: bool = False, **params) -> tuple[list[dict], dict, str]:
    """Chapter 2's grid measurement from its parameters (`chapter_runs`' keywords): in "local" mode (CPU or
    one GPU with virtual ranks) every record is appended to `records_path` as it is measured and read back
    from it; in "torchrun" mode (GPU nodes, real NCCL) one torchrun per TP degree, with NVLink peer-to-peer
    on and, with `p2p_off`, off. Returns (records, links, main_link): each record tagged with its "set" and
    "link_name" (the parameter's name of its link)."""
    if mode == "local":
        links_param, main_link = params["links"], params["main_link"]
        path = start_records(records_path)
        for sset, cfgs in chapter_runs(**params):  # round-robin within each grid point (the pairing statistics use)
            run_local(cfgs, interleave=True, interleave_by=INTERLEAVE_BY, out=path, tags={"set": sset})
        records = read_records(path)
    elif mode == "torchrun":
        runs = Path(runs_dir)
        runs.mkdir(parents=True, exist_ok=True)
        records = []
        grid = params["grid"]
        for p2p in [True] + ([False] if p2p_off else []):
            for tp in sorted({tp for tp, _ in grid}):
                recs = run_torchrun(tp, runs / f"tp{tp}-{'p2p' if p2p else 'nop2p'}.jsonl", p2p=p2p,
                                    preset=[params["preset_name"]], wiring=params["wirings"],
                                    batch=[b for t, b in grid if t == tp], dtype=[params["dtype"]],
                                    prompt_len=params["prompt_len"], new_tokens=params["new_tokens"],
                                    warmup=params["warmup"], samples=params["samples"], compile=params["compile"])
                for r in recs:
                    r["set"], r["link"] = "nccl", {"name": "nvlink" if p2p else "nccl_p2p_disable"}
                records += recs
        links_param = {"nvlink": None} | ({"nccl_p2p_disable": None} if p2p_off else {})
        main_link = "nvlink"
    else:
        raise ValueError(f"parameter `mode` is {mode!r}: 'local' (CPU, or one GPU with virtual ranks) or 'torchrun'")
    for r in records:
        name = (r.get("link") or {}).get("name")
        r["link_name"] = "none" if name is None else next((k for k, v in links_param.items() if v == name), name)
    return records, links_param, main_link
