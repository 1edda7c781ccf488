"""One step of scripts/gpu_check.sh as a machine-readable record: $OUT/step<N>_<name>.json.

Provenance (the commit from $LADDER_COMMIT: the GPU machine's copy has no .git; device name, torch and CUDA
versions, date), the step's exit code and wall time, the JSON the step wrote itself (--result: the GPU
tests' record, the peer benchmark's results), and for the chapter step a summary of every benchmark record
streamed to its JSON-lines file (--records): each configuration's tokens/s beside decode ms per token, the
spin calibration, and each link's requested vs achieved all-reduce duration. Never fails the step: a
missing or broken input is noted in the record.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path


def summarize(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        link = r.get("link") or {}
        rows.append({"set": r.get("set"), "preset": r.get("preset"), "tp": r.get("tp"), "batch": r.get("batch"),
                     "wiring": r.get("wiring"), "link": link.get("name") if isinstance(link, dict) else link,
                     "tokens_per_s": r.get("tokens_per_s"),
                     "decode_ms_per_token": 1e3 * r["decode_s_per_token"] if "decode_s_per_token" in r else None,
                     "prefill_s": r.get("prefill_s"), "samples_tokens_per_s": r.get("samples_tokens_per_s"),
                     "link_calibration": r.get("link_calibration"), "link_durations": r.get("link_durations")})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="the folder ($OUT)")
    ap.add_argument("--step", required=True, help="e.g. 1_gpu_tests")
    ap.add_argument("--rc", type=int, required=True, help="the step's exit code (124/137: killed by its limit)")
    ap.add_argument("--wall", type=float, required=True, help="the step's wall seconds")
    ap.add_argument("--limit", type=float, default=None, help="the step's time limit (s)")
    ap.add_argument("--command", default="", help="what the step ran")
    ap.add_argument("--result", default=None, help="a JSON file the step wrote, kept under 'result'")
    ap.add_argument("--records", default=None, help="a benchmark JSON-lines file, summarised under 'records'")
    a = ap.parse_args(argv)
    body = {"step": a.step, "exit_code": a.rc, "killed_by_limit": a.rc in (124, 137), "wall_s": a.wall,
            "limit_s": a.limit, "command": a.command, "dry_run": os.environ.get("DRY_RUN", "0") == "1"}
    try:
        import torch
        cuda = torch.cuda.is_available()
        body.update(device=torch.cuda.get_device_name() if cuda else "none (no CUDA)", torch=torch.__version__,
                    cuda=torch.version.cuda)
        from ladder.bench import run_provenance
        body["provenance"] = run_provenance({"step": a.step, "command": a.command})
    except Exception as e:  # noqa: BLE001 - the record must be written whatever broke
        body["provenance"] = {"git_commit": os.environ.get("LADDER_COMMIT", "unknown"),
                              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                              "error": f"{type(e).__name__}: {e}"}
    if a.result:
        try:
            body["result"] = json.loads(Path(a.result).read_text())
        except (OSError, ValueError) as e:
            body["result"] = None
            body["result_error"] = f"{a.result}: {e}"
    if a.records:
        try:
            from ladder.bench import read_records
            recs = read_records(a.records)
            body["records_file"], body["n_records"], body["records"] = a.records, len(recs), summarize(recs)
        except (OSError, ValueError) as e:
            body["n_records"], body["records_error"] = 0, f"{a.records}: {e}"
    path = Path(a.out) / f"step{a.step}.json"
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
    print(f"[gpu_check] step {a.step}: exit {a.rc} in {a.wall:.0f} s -> {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
