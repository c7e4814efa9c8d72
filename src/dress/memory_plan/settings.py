"""What the plan knows about a run: :class:`RunSettings`, the settings that move memory, read from a
:class:`~dress.config.PruneConfig` (the common ones here, the method's own from its folder)."""

from __future__ import annotations

from dataclasses import dataclass

from dress.memory_plan.method import method_memory


@dataclass(frozen=True)
class RunSettings:
    """The settings of a run that move memory (see :func:`settings_from_config`)."""

    method: str = "dress"
    ratio: float = 0.25
    width_multiple: int = 32
    # decided by the method (its MethodMemory.settings): its training stage and its scoring forward
    train_batch: int = 1  # micro-batch per process
    train_seq: int = 256
    trains: bool = True  # regularization / TRSP stages train every parameter
    gradient_checkpointing: bool = False
    score_batch: int = 4
    scores: bool = True  # a scoring forward over the calibration windows (channel or layer choice)
    eval_enabled: bool = True
    eval_batch: int = 4
    eval_seq: int = 512
    rft: bool = True
    rft_mode: str = "lora"
    rft_batch: int = 1
    lora_rank: int = 8
    rft_gradient_checkpointing: bool = False
    bf16: bool = False
    distill: bool = False
    device_type: str = "cpu"
    save_bytes: int = 4  # bytes per parameter of the saved output
    method_detail: dict | None = None  # anything else a method's own plan reads (LLM Surgeon: shots)


def settings_from_config(config, device_type: str) -> RunSettings:
    """The memory-relevant settings of a :class:`~dress.config.PruneConfig` on ``device_type``: the
    common ones here, the method's own (its training stage, its scoring) from its folder."""
    bf16 = config.bf16 if config.bf16 is not None else device_type == "cuda"
    save = getattr(config, "save_dtype", "source")
    return RunSettings(
        method=config.method, ratio=config.ratio, width_multiple=config.width_multiple,
        train_seq=config.data.seq_len,
        eval_enabled=config.evaluate.enabled, eval_batch=config.evaluate.batch_size, eval_seq=config.evaluate.seq_len,
        rft=config.recovery.enabled and config.recovery.steps > 0, rft_mode=config.recovery.mode,
        rft_batch=config.recovery.batch_size, lora_rank=config.recovery.rank,
        rft_gradient_checkpointing=config.recovery.gradient_checkpointing,
        bf16=bool(bf16), distill=config.distill.weight > 0, device_type=device_type,
        save_bytes={"fp32": 4, "bf16": 2, "fp16": 2}.get(save, 0),
        **method_memory(config.method).settings(config),
    )
