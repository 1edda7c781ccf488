"""Loaders for the offline lm-eval tasks (used by the YAMLs here through `custom_dataset: !function`).

Data paths are resolved when a task is loaded, through `ladder.paths` (LADDER_DATA), never relative to
the working directory. Each loader returns a DatasetDict with a "test" split in the fields the task
YAML reads; prompts follow lm-eval's own task definitions (0.4.x) as closely as the local files allow:

* ARC-E/C, PIQA, OpenBookQA, COPA: llm-foundry ICL files (`query`, `choices`, `gold`); "\\nAnswer:" is
  added to ARC and PIQA questions as in lm-eval's templates.
* WinoGrande: llm-foundry `context_options` / `continuation` (lm-eval's partial scoring).
* HellaSwag: the llama.cpp text layout (6 lines per item, already preprocessed like lm-eval's).
* LAMBADA (OpenAI): `context` / `continuation` (the last word).
* WikiText-2 (raw test): split into articles at the level-1 headings, as in
  EleutherAI/wikitext_document_level, and scored with lm-eval's detokenizer and metrics.
"""
from __future__ import annotations

import bz2
import json

import datasets
from lm_eval.tasks.wikitext.preprocess_wikitext import process_results, wikitext_detokenizer  # noqa: F401

from ladder.paths import data_path


def _jsonl(name: str) -> list[dict]:
    with open(data_path("eval", "llm_foundry_icl", name)) as f:
        return [json.loads(l) for l in f if l.strip()]


def _test(rows: list[dict]) -> datasets.DatasetDict:
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def _mc(name: str, answer_suffix: bool):
    rows = []
    for r in _jsonl(name):
        q = r["query"].strip()
        rows.append({"query": q + "\nAnswer:" if answer_suffix else q, "choices": r["choices"], "gold": int(r["gold"])})
    return _test(rows)


def arc_easy(**kw):
    return _mc("arc_easy.jsonl", True)


def arc_challenge(**kw):
    return _mc("arc_challenge.jsonl", True)


def piqa(**kw):
    return _mc("piqa.jsonl", True)


def openbookqa(**kw):
    return _mc("openbook_qa.jsonl", False)


def winogrande(**kw):
    return _test([{"context_options": r["context_options"], "continuation": r["continuation"].strip(),
                   "gold": int(r["gold"])} for r in _jsonl("winogrande.jsonl")])


def winogrande_gold(doc):  # multiple contexts, one continuation: doc_to_text gives the gold context index
    return doc["gold"]


def lambada(**kw):
    return _test([{"context": r["context"], "continuation": r["continuation"]} for r in _jsonl("lambada_openai.jsonl")])


def hellaswag(**kw):
    with bz2.open(data_path("eval", "hellaswag_val_klosax", "hellaswag_val_full.txt.bz2"), "rt") as f:
        lines = f.read().split("\n")
    rows = []
    for i in range(0, len(lines) - 5, 6):  # ctx, gold label, 4 endings
        rows.append({"query": lines[i], "gold": int(lines[i + 1]), "choices": lines[i + 2:i + 6]})
    return _test(rows)


def wikitext(**kw):
    text = data_path("eval", "wikitext2_raw_test", "wiki.test.raw").read_text()
    pages, cur = [], []
    for line in text.splitlines(keepends=True):
        # a level-1 heading (" = Title = ", not " = = Section = = ") starts a new article
        if line.startswith(" = ") and not line.startswith(" = = ") and cur and any(l.strip() for l in cur):
            pages.append("".join(cur))
            cur = []
        cur.append(line)
    if cur:
        pages.append("".join(cur))
    return _test([{"page": p} for p in pages])
