"""LoRA on the base model and capturelab's training loop (what ``bench train`` compares).

The loop is plain PyTorch: AdamW on the adapter's parameters only, linear warm-up then decay,
gradient clipping, bf16 autocast on CUDA, a bounded number of optimizer steps. It counts the
tokens it trains on (padding excluded) and the time the steps take, so tokens/s means the same
here and in the reference run (``capturelab.bench.train``).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from capturelab.errors import InputError
from capturelab.train.data import Tokenized, batches, collate, tokens_in


@dataclass(frozen=True)
class LoraOptions:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class TrainOptions:
    steps: int = 60
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 2e-4
    warmup_fraction: float = 0.1
    max_seq_len: int = 512
    seed: int = 0

    def check(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "max_seq_len"):
            if getattr(self, name) < 1:
                raise InputError(f"train option {name} must be at least 1")
        if not 0 < self.learning_rate < 1:
            raise InputError("train option learning_rate must be in (0, 1)")


def add_lora(model: Any, options: LoraOptions, *, quantized: bool) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training  # noqa: PLC0415

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in options.target_modules if m not in names]
    if missing:
        raise InputError(
            f"lora target_modules {missing} are not in this model (it has e.g. "
            f"{sorted(n for n in names if n.endswith('proj'))[:8]})"
        )
    if quantized:
        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model,
            use_gradient_checkpointing=True,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    config = LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(options.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def peak_memory(device: str) -> tuple[int, str]:
    """Bytes and what they measure."""
    if device == "cuda":
        import torch  # noqa: PLC0415

        return int(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS (getrusage)"


def oom_message(options: TrainOptions, step: int) -> str:
    return (
        f"out of memory at step {step} with batch_size {options.batch_size} and max_seq_len "
        f"{options.max_seq_len}: lower batch_size (raise grad_accum to keep the effective "
        f"batch), lower max_seq_len, or use quantize 4bit on a GPU"
    )


def train(
    model: Any,
    items: Sequence[Tokenized],
    *,
    pad_id: int,
    device: str,
    options: TrainOptions,
    shuffle: bool = True,
) -> dict[str, Any]:
    """Run ``options.steps`` optimizer steps; returns the loss curve and throughput.

    ``shuffle=False`` takes the items in the order given (the benchmark feeds both sides the
    same batches).
    """
    import torch  # noqa: PLC0415

    options.check()
    torch.manual_seed(options.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=options.learning_rate, weight_decay=0.0)
    warmup = max(1, int(options.steps * options.warmup_fraction))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (options.steps - step) / max(1, options.steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    stream = batches(items, options.batch_size, options.seed, shuffle=shuffle)
    model.train()
    losses: list[float] = []
    tokens = 0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    try:
        for _step in range(options.steps):
            step_loss = 0.0
            for _ in range(options.grad_accum):
                batch = {k: v.to(device) for k, v in collate(next(stream), pad_id).items()}
                tokens += tokens_in(batch)
                with torch.autocast(
                    device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"
                ):
                    loss = model(**batch).loss / options.grad_accum
                loss.backward()
                step_loss += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(round(step_loss, 5))
    except (torch.OutOfMemoryError, MemoryError):
        raise InputError(oom_message(options, len(losses))) from None
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    memory, memory_source = peak_memory(device)
    return {
        "steps": options.steps,
        "loss_curve": losses,
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "steps_per_s": round(options.steps / wall, 4),
        "peak_memory_bytes": memory,
        "peak_memory_source": memory_source,
    }
