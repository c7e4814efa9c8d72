"""What a written output records about itself: the dtype it is saved in (``--save-dtype``, or the
source checkpoint's own) and its size on disk beside the input's (``dress.json``'s ``size_on_disk``)."""

from __future__ import annotations

import torch

from dress.errors import DressError
from dress.io.loading import model_config, resolve_model_path
from dress.io.record import write_record
from dress.io.saving import weights_on_disk


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
           "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def source_dtype_name(spec: str | None) -> str:
    """The dtype the source checkpoint is stored in (its config's ``dtype``/``torch_dtype``), e.g.
    ``float16`` for Llama-2; ``float32`` when the config does not say."""
    try:
        cfg = model_config(spec)
    except DressError:
        return "float32"
    cfg = getattr(cfg, "text_config", None) or cfg
    name = str(getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None) or "float32")
    return name.removeprefix("torch.")


def save_dtype(config) -> torch.dtype:
    """The dtype of the saved model: ``--save-dtype``, or the source's (``source``)."""
    name = config.save_dtype if config.save_dtype != "source" else source_dtype_name(config.model)
    return _DTYPES.get(name, torch.float32)


def finish_record(record: dict, out, config) -> None:
    """Add the output's and the input's size on disk to ``record`` and rewrite ``out/dress.json``."""
    _source, path = resolve_model_path(config.model)
    size_in = weights_on_disk(path) if path is not None else None
    if size_in is None:  # a hub id: parameters x the stored dtype's bytes
        params = record.get("parameters", {}).get("before", 0)
        size_in = params * _DTYPES.get(source_dtype_name(config.model), torch.float32).itemsize
        estimated = True
    else:
        estimated = False
    record["size_on_disk"] = {"input_bytes": int(size_in), "input_estimated": estimated,
                              "output_bytes": int(weights_on_disk(out) or 0), "output_dtype": record.get("saved_dtype")}
    write_record(out, record)
