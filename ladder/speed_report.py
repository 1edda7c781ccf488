"""Chapter 2 as a report: each section of the speed chapter as one call that returns what its page shows.

A `Section` holds the numbers the chapter's prose cites (`values`, glued by the notebook), its table or
figure, and the data its result file keeps. The measurements and estimators live in ladder.replay (the a/c
replay, the rivals), ladder.trace (the overlap count) and ladder.speedup (paired-round estimators, the
performance model against the paper); this module only assembles them, so notebooks/02_speedup.ipynb stays
a page of calls, figures and prose.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import replay as rp
from . import speedup as sp
from .claims import EVIDENCE, ClaimEntry, block
from .config import preset
from .paths import paper_table
from .provenance import write_result
from .replay import claim_entry, regimes
from .tables import styled
from .trace import overlap_table
# pandas and matplotlib are imported inside the functions that use them: importing ladder.speed_report does not load
# them.


@dataclass
class Section:
    """One part of chapter 2: what its page shows (`table`, `figure`), the numbers its prose cites (`values`,
    name -> value, glued by the notebook) and what goes into the result file (`data`)."""
    values: dict = field(default_factory=dict)
    table: Any = None
    figure: Any = None
    data: dict = field(default_factory=dict)


# the names chapter 2's prose cites from the CPU-only replay and rivals sections
CPU_ONLY_VALUES = ("replay_max_err", "module_ms", "hidden_low", "hidden_beyond", "ratio_beyond", "tbo_speedup", "ladder_rival_speedup", "tbo_replay",
                   "ladder_rival_replay")
CPU_ONLY_FIGURES = ("fig_replay", "fig_rivals")


def cpu_only_placeholders(profile: str) -> Section:
    """On a GPU profile, the replay and the rivals (measured on CPU only) say so where their results would be."""
    import matplotlib.pyplot as plt
    values = dict.fromkeys(CPU_ONLY_VALUES, float("nan"))
    for name in CPU_ONLY_FIGURES:
        fig = plt.figure(figsize=(6, 1))
        fig.text(0.5, 0.5, f"measured on CPU only (profile {profile})", ha="center")
        values[name] = fig
        plt.close(fig)
    return Section(values)


def mechanism_section(shape, tp: int, on_cpu: bool = True) -> Section:
    """Which all-reduce runs behind which module, counted from one real decode step (ladder.trace). The order
    of starts and waits depends on the layers and wirings, not on the width: a paper-scale shape is counted on
    the same depth at a width this machine holds (the weight and FLOP columns are then that width's)."""
    mech = overlap_table(shape if on_cpu else preset("cpu-bench", n_layers=shape.n_layers), tp=tp, batch=2)
    values = {f"mech_{w.split(' ')[0]}": int(n) for w, n in zip(mech.wiring, mech["behind a whole module"])}
    values |= {"mech_n": int(mech.set_index("wiring").loc["standard", "all-reduces per step"]), "mech_tp": tp}
    return Section(values, mechanism_table(mech), data={"mechanism": mech.to_dict(orient="records")})


# the columns of trace.overlap_table that describe the modules an all-reduce hides behind: blank ("–") on the
# page for a wiring that hides none (the data keeps its 0.0 and "-")
_BEHIND = ("hidden behind", "MB of weights behind each", "MFLOPs behind each")


def mechanism_table(mech):
    """trace.overlap_table's rows for the page: what a wiring hides behind left blank where it hides nothing."""
    hides = mech["behind a whole module"] > 0
    shown = mech.astype({c: object for c in _BEHIND})
    shown.loc[~hides, list(_BEHIND)] = None
    return styled(shown, formats={"MB of weights behind each": "{:.2f}", "MFLOPs behind each": "{:.2f}"})


REGIME_LABELS = {"short": "regime", "name": "setting", "shape": "shape", "tp": "TP", "allreduce_us": "a (µs)",
                 "c_us": "c (µs, model)", "a/c": "a/c", "note": "note", "source": "source"}


def regimes_section(mv: dict, claim_regimes: dict) -> Section:
    """Real hardware on the a/c axis (ladder.replay.regimes), and the ratio each claim is measured at."""
    import pandas as pd
    regs = regimes(mv["hw"], paper_table("speed_grid.csv"), paper_slow_speedup=1.6)
    reg = pd.DataFrame(regs)
    values = {f"ratio_{k}": float(reg.set_index("short").loc[name, "a/c"]) for k, name in claim_regimes.items()}
    table = styled(reg[list(REGIME_LABELS)], labels=REGIME_LABELS,
                   formats={"allreduce_us": "{:.1f}", "c_us": "{:.1f}", "a/c": "{:.2f}"})
    ratios = {r["short"]: r["a/c"] for r in regs}
    return Section(values, table, data={"regimes": regs, "ratios": ratios})


def replay_section(shape, ratios: dict[str, float], *, tp: int, prompt_len: int, new_tokens: int, samples: int,
                   warmup: int, module_reps: int, figure_path=None, regimes: list[dict] | None = None) -> Section:
    """Measure standard, ladder and the upper bound with the link set to each regime's a/c (`ratios`), replay
    the same from module times (ladder.replay.validate), and draw the replay's curves with the measurements."""
    import matplotlib.pyplot as plt
    import pandas as pd
    val = rp.validate(shape, ratios, tp=tp, prompt_len=prompt_len, new_tokens=new_tokens, samples=samples,
                      warmup=warmup, reps=module_reps)
    curve = rp.curves(shape, val["costs"], [x / 20 for x in range(0, 41)])
    meas = pd.DataFrame(val["rows"])
    pts = meas.assign(**{"speed-up": meas.speedup, "lo": [c[0] for c in meas.speedup_ci],
                         "hi": [c[1] for c in meas.speedup_ci]})
    ax = rp.plot_curves(curve, regimes, pts, title=f"{shape.n_layers}-layer d{shape.dim} rank of TP={tp}, batch 1")
    if figure_path is not None:
        ax.figure.savefig(figure_path, dpi=120, bbox_inches="tight")
    plt.close(ax.figure)
    below, beyond = meas[meas["a/c"] < 1], meas.loc[meas["a/c"].idxmax()]
    values = {"fig_replay": ax.figure, "replay_max_err": float(meas.replay_error.abs().max()),
              "module_ms": float(1e3 * rp.unit_compute(val["costs"])),
              # the share of standard's link wait ladder hid: below a/c = 1 (the worst regime) and at the largest a/c
              "hidden_low": float(below.hidden.min()) if len(below) else float("nan"),
              "hidden_beyond": float(beyond.hidden), "ratio_beyond": float(beyond["a/c"])}
    return Section(values, styled(rp.validation_table(val["rows"])), ax.figure,
                   data={"module_costs": val["costs"], "replay_curve": curve.to_dict(orient="records"),
                         "validation": val["rows"], "raw_records": val["records"], "_records": val["records"]})


def rivals_section(shape, ratio: float, *, batch: int, tp: int, prompt_len: int, new_tokens: int, samples: int,
                   warmup: int, module_reps: int, figure_path=None) -> Section:
    """Ladder beside the exact rivals (a faster all-reduce, two-batch overlap) at one a/c and batch, measured
    and replayed (ladder.replay.rivals)."""
    import matplotlib.pyplot as plt
    rv = rp.rivals(shape, ratio, batch=batch, tp=tp, prompt_len=prompt_len, new_tokens=new_tokens, samples=samples,
                   warmup=warmup, reps=module_reps)
    ax = rp.plot_rivals(rv["rows"], title=f"decode speed-up over standard (batch {batch}, a/c = {ratio:.2f})")
    if figure_path is not None:
        ax.figure.savefig(figure_path, dpi=120, bbox_inches="tight")
    plt.close(ax.figure)
    by = {r["method"]: r for r in rv["rows"]}
    # plain floats: myst-nb formats a glued numpy scalar's repr ("np.float64(...)"), not its value
    values = {"fig_rivals": ax.figure, "tbo_speedup": float(by["two-batch overlap"]["speedup"]),
              "ladder_rival_speedup": float(by["ladder"]["speedup"]),
              "tbo_replay": float(by["two-batch overlap"]["replay_speedup"]),
              "ladder_rival_replay": float(by["ladder"]["replay_speedup"])}
    return Section(values, figure=ax.figure, data={"rivals": rv["rows"], "raw_records": rv["records"]})


def model_section(mv: dict, figure_path=None) -> Section:
    """The performance model against the paper's tables (`model_vs_paper`): its fitted efficiencies, its
    errors in and out of the column it was fitted on, and the figure."""
    import matplotlib.pyplot as plt
    fig = sp.plot_model_vs_paper(mv)
    if figure_path is not None:
        fig.savefig(figure_path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    values = {k: float(v) for k, v in {
        "gpu_eff": mv["fit"]["gpu_efficiency"], "link_eff": mv["fit"]["link_efficiency"],
        "launch_us": mv["fit"]["launch_us"],
        "ins_grid": mv["in_sample_error"], "oos_grid": mv["out_of_sample_error"],
        "batch_table_max_err": mv["batch_table_max_error"], "oos_size_speedup": mv["size_speedup_error"],
        "h4_paper_grid": sp.paper_comm_share()}.items()} | {"fig_model": fig}
    model = {k: mv[k] for k in ("fit", "in_sample_error", "out_of_sample_error", "batch_table_max_error",
                                "size_speedup_error")}
    return Section(values, figure=fig, data={"model": model})


def slow_links_table(slow):
    """`speedup.model_slow_links` for reading: ladder's modelled speed-up per setting and link factor, a column per batch."""
    wide = slow.pivot_table(index=["setting", "link factor"], columns="batch", values="ladder_speedup")
    return wide.rename(columns=lambda b: f"batch {b} (×)").reset_index().rename_axis(columns=None)


def entries_table(claims: dict):
    """A claims block (claim -> entries) as a table: claim, evidence (as the claims table names it), what we
    found and the 95% interval of its quantity (three significant digits, trailing zeros kept: 1.40–1.56)."""
    import pandas as pd
    rows = []
    for cid, es in claims.items():
        for e in es:
            d = e.to_dict() if hasattr(e, "to_dict") else dict(e)
            ci = (d.get("ci") or {}).get(d.get("quantity"))
            rows.append({"claim": cid, "evidence": EVIDENCE[d["evidence"]][0], "ours": d.get("ours", ""),
                         "95% CI": f"{ci[0]:#.3g}–{ci[1]:#.3g}" if ci else None})
    return pd.DataFrame(rows)


def cpu_claim_entries(claim_regimes: dict, replayed: Section, shape, tp: int) -> dict[str, list[ClaimEntry]]:
    """H1-H3 on CPU: each claim's `replay_section` row at the regime it is measured at (ladder.replay.claim_entry)."""
    rows, records = replayed.data["validation"], replayed.data["_records"]
    return {cid: [claim_entry(next(r for r in rows if r["name"] == name), records, shape, tp)]
            for cid, name in claim_regimes.items()}


def write_chapter(path, claims: dict, sections: list[Section], params: dict, elapsed_s: float):
    """data/results/<profile>/speedup.json: the claims block, every section's data (raw records merged), the
    run's wall time and its parameters (with provenance)."""
    payload = {"experiment": "speedup", "claims": block(claims)}
    raw = []
    for s in sections:
        for k, v in s.data.items():
            if k == "raw_records":
                raw += v
            elif not k.startswith("_") and k != "ratios":
                payload[k] = v
    payload |= {"raw_records": raw, "elapsed_s": elapsed_s}
    return write_result(path, payload, params)


# the parameters of chapter 2 stored with its result (the notebook's parameters cell, less the GPU-only switches)
CHAPTER_PARAMS = ("profile", "mode", "preset_name", "model_overrides", "tp", "prompt_len", "new_tokens", "warmup",
                  "samples", "module_reps", "claim_regimes", "extra_regimes", "rivals_batch", "grid", "wirings",
                  "links", "main_link", "device", "threads", "extra_shapes")


def chapter_params(namespace: dict) -> dict:
    """Chapter 2's parameters, read from the notebook's namespace (its parameters cell)."""
    missing = [k for k in CHAPTER_PARAMS if k not in namespace]
    if missing:
        raise KeyError(f"chapter 2's parameters cell lacks {missing}")
    return {k: namespace[k] for k in CHAPTER_PARAMS}
