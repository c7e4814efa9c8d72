"""The model card (``README.md``) of an output folder, written from its ``dress.json``.

The Hub shows a folder's ``README.md`` and reads its YAML front matter (``base_model``, ``tags``,
``pipeline_tag``, ``library_name``); users push dress outputs there as they are. Everything in the card
comes from the record, so the card and ``dress.json`` never disagree.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def _looks_like_hub_id(source: str) -> bool:
    return source.count("/") == 1 and not Path(source).exists() and not source.startswith((".", "/", "~"))


def model_card(record: dict) -> str:
    source = str(record.get("source_model") or "")
    method = str(record.get("method") or "")
    meta = {"library_name": "transformers" if record.get("loader", "transformers") == "transformers" else "dress",
            "pipeline_tag": "text-generation", "tags": ["dress", "pruned", "structured-pruning", method]}
    if _looks_like_hub_id(source):
        meta["base_model"] = source
    params = record.get("parameters") or {}
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
             f"# {Path(source).name or 'model'}, pruned with dress ({method})", ""]
    if params:
        before, after = params.get("before", 0), params.get("after", 0)
        lines.append(f"- **Parameters**: {before / 1e6:.1f}M -> {after / 1e6:.1f}M "
                     f"({1 - after / max(before, 1):.1%} fewer), method `{method}` at ratio {record.get('ratio')}")
    if record.get("hidden_size"):
        lines.append(f"- **Hidden width**: {record['hidden_size']['before']} -> {record['hidden_size']['after']}")
    if record.get("layers"):
        lines.append(f"- **Layers**: {record['layers']['before']} -> {record['layers']['after']}")
    held = (record.get("evaluation") or {}).get("held_out") or {}
    if held.get("dense") and held.get("pruned"):
        dense, pruned = held["dense"], held["pruned"]
        lines.append(f"- **Held-out perplexity** ({record['evaluation'].get('source')}, context {pruned.get('seq_len')}, "
                     f"{pruned.get('n_tokens_scored')} tokens): dense {dense['ppl']:.2f} -> pruned {pruned['ppl']:.2f}")
    load = ("AutoModelForCausalLM.from_pretrained(folder)" if meta["library_name"] == "transformers"
            else "dress.load(folder)  # not a stock checkpoint: pip install dress-llm")
    lines += ["", "Load it with:", "", "```python", load, "```", "",
              "Repeat the run with `dress prune --config dress.json --out OUT`; `dress.json` in this folder records "
              "every setting, the measurements and the versions used.", ""]
    return "\n".join(lines)


def write_model_card(folder: Path, record: dict) -> None:
    (Path(folder) / "README.md").write_text(model_card(record))
