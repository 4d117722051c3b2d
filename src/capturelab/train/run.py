"""A fine-tune from a built dataset to an adapter, its metrics and its evaluation.

``<out>/<dataset id>-<UTC time>/adapter/`` (peft: adapter_config.json, adapter_model.safetensors)
and ``metrics.json``, written under ``<out>/.partial-*`` and renamed only when everything is
there: a failed run (bad model, out of memory, interrupted) leaves no directory that looks
complete. ``<out>/latest`` points at the newest complete run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capturelab.dataset.build import verify
from capturelab.dataset.example import read_examples
from capturelab.durable import fsync_dir, point_latest, write_atomic
from capturelab.errors import InputError
from capturelab.machine import machine
from capturelab.train.data import tokenize
from capturelab.train.energy import EnergyMeter
from capturelab.train.evaluate import evaluate
from capturelab.train.loop import LoraOptions, TrainOptions, add_lora, train
from capturelab.train.model import load, resolve

DEVICES = ("auto", "cpu", "cuda")
QUANTIZE = ("auto", "none", "4bit")


@dataclass(frozen=True)
class RunOptions:
    model: str = "smollm2"
    device: str = "auto"  # auto: cuda when torch sees a GPU
    quantize: str = "auto"  # auto: 4bit (QLoRA) on cuda, none on cpu
    allow_hub: bool = False
    eval_examples: int = 32
    lora: LoraOptions = field(default_factory=LoraOptions)
    train: TrainOptions = field(default_factory=TrainOptions)

    def check(self) -> None:
        if self.device not in DEVICES:
            raise InputError(
                f"train option device {self.device!r} is not one of {', '.join(DEVICES)}"
            )
        if self.quantize not in QUANTIZE:
            raise InputError(
                f"train option quantize {self.quantize!r} is not one of {', '.join(QUANTIZE)}"
            )
        if self.eval_examples < 0:
            raise InputError("train option eval_examples must be 0 or more")
        self.train.check()


def pick_device(device: str) -> str:
    import torch  # noqa: PLC0415

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("train option device cuda: torch sees no CUDA GPU on this node")
    return device


def _empty(dataset: Path, card: dict[str, Any]) -> str:
    excluded = "; ".join(f"{n} events: {why}" for why, n in card.get("excluded", {}).items())
    return (
        f"{dataset}: the dataset has no training examples ({card['counts']['examples']}); "
        f"the builder removed: {excluded or 'nothing (the sessions were too short)'}"
    )


def run(dataset: Path, out: Path, options: RunOptions | None = None) -> Path:
    opts = options or RunOptions()
    opts.check()
    card = verify(dataset)
    train_examples = read_examples(dataset / "train.jsonl")
    eval_examples = read_examples(dataset / "eval.jsonl")[: opts.eval_examples]
    if not train_examples:
        raise InputError(_empty(dataset, card))
    spec = resolve(opts.model)
    device = pick_device(opts.device)
    quantize = (
        opts.quantize if opts.quantize != "auto" else ("4bit" if device == "cuda" else "none")
    )
    import torch  # noqa: PLC0415

    torch.set_num_threads(os.cpu_count() or 1)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{card['dataset_id'][:12]}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f".partial-{name}"
    partial.mkdir()
    try:
        started = time.perf_counter()
        model, tokenizer = load(spec, device=device, quantize=quantize, allow_hub=opts.allow_hub)
        load_s = time.perf_counter() - started
        model = add_lora(model, opts.lora, quantized=quantize == "4bit")
        items = tokenize(train_examples, tokenizer, opts.train.max_seq_len)
        meter = EnergyMeter()
        meter.start()
        train_metrics = train(
            model, items, pad_id=tokenizer.pad_token_id, device=device, options=opts.train
        )
        train_metrics["energy"] = meter.stop()
        if eval_examples:
            evaluation = evaluate(
                model,
                tokenizer,
                eval_examples,
                tokenize(eval_examples, tokenizer, opts.train.max_seq_len),
                train_examples,
                device=device,
                max_prompt_tokens=opts.train.max_seq_len,
            )
        else:
            evaluation = {"skipped": "the dataset has no eval examples (one session only?)"}
        model.save_pretrained(partial / "adapter")
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        metrics = {
            "model": spec.name,
            "dataset_id": card["dataset_id"],
            "device": device,
            "device_name": torch.cuda.get_device_name(0) if device == "cuda" else machine()["cpu"],
            "quantize": quantize,
            "torch": torch.__version__,
            "lora": asdict(opts.lora),
            "options": asdict(opts.train),
            "trainable_parameters": trainable,
            "examples": {"train": len(train_examples), "eval": len(eval_examples)},
            "load_s": round(load_s, 3),
            "train": train_metrics,
            "eval": evaluation,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_atomic(partial / "metrics.json", (json.dumps(metrics, indent=1) + "\n").encode())
        fsync_dir(partial)
        final = out / name
        partial.rename(final)
        fsync_dir(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    point_latest(out, final.name)
    return final
