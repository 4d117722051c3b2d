"""``capturelab train run``: fine-tune on a built dataset (run on the processing node)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from capturelab.train.loop import LoraOptions, TrainOptions
from capturelab.train.run import DEVICES, QUANTIZE, RunOptions, run


def add_options(p: argparse.ArgumentParser) -> None:
    """The model and training options ``train run`` and ``bench train`` share."""
    p.add_argument(
        "--model", default=RunOptions.model, help="smollm2, a model directory or a .gguf"
    )
    p.add_argument("--device", choices=DEVICES, default=RunOptions.device)
    p.add_argument("--quantize", choices=QUANTIZE, default=RunOptions.quantize)
    p.add_argument("--allow-hub", action="store_true", help="allow Hugging Face Hub downloads")
    p.add_argument("--steps", type=int, default=TrainOptions.steps)
    p.add_argument("--batch-size", type=int, default=TrainOptions.batch_size)
    p.add_argument("--grad-accum", type=int, default=TrainOptions.grad_accum)
    p.add_argument("--learning-rate", type=float, default=TrainOptions.learning_rate)
    p.add_argument("--max-seq-len", type=int, default=TrainOptions.max_seq_len)
    p.add_argument("--seed", type=int, default=TrainOptions.seed)
    p.add_argument("--lora-r", type=int, default=LoraOptions.r)
    p.add_argument("--lora-alpha", type=int, default=LoraOptions.alpha)
    p.add_argument("--lora-dropout", type=float, default=LoraOptions.dropout)
    p.add_argument("--target-modules", default=",".join(LoraOptions.target_modules))


def options_from(args: argparse.Namespace, eval_examples: int = 0) -> RunOptions:
    return RunOptions(
        model=args.model,
        device=args.device,
        quantize=args.quantize,
        allow_hub=args.allow_hub,
        eval_examples=eval_examples,
        lora=LoraOptions(
            args.lora_r,
            args.lora_alpha,
            args.lora_dropout,
            tuple(m.strip() for m in args.target_modules.split(",") if m.strip()),
        ),
        train=TrainOptions(
            steps=args.steps,
            batch_size=args.batch_size,
            grad_accum=args.grad_accum,
            learning_rate=args.learning_rate,
            max_seq_len=args.max_seq_len,
            seed=args.seed,
        ),
    )


def cmd_run(args: argparse.Namespace) -> int:
    path = run(args.dataset, args.out, options_from(args, args.eval_examples))
    metrics = json.loads((path / "metrics.json").read_text())
    if args.json:
        print(json.dumps({"path": str(path), "metrics": metrics}, indent=1))
        return 0
    t, e = metrics["train"], metrics["eval"]
    print(f"adapter: {path / 'adapter'}")
    print(
        f"train: {t['steps']} steps on {metrics['device']} ({metrics['quantize']}), loss "
        f"{t['loss_curve'][0]:.3f} -> {t['loss_curve'][-1]:.3f}, {t['tokens_per_s']:.0f} tokens/s"
    )
    if "base" in e:
        print(
            f"eval ({e['examples']} held-out examples): perplexity {e['base']['perplexity']:.2f} "
            f"-> {e['tuned']['perplexity']:.2f}, next-action accuracy "
            f"{e['base']['next_action_accuracy']:.2f} -> {e['tuned']['next_action_accuracy']:.2f}"
        )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("train", help="LoRA/QLoRA fine-tuning on a built dataset")
    tsub = parser.add_subparsers(dest="train_cmd", required=True)
    r = tsub.add_parser("run", help="fine-tune, evaluate against the base model, save the adapter")
    r.add_argument("--dataset", type=Path, required=True, help="a built dataset directory")
    r.add_argument("--out", type=Path, required=True, help="where runs are written")
    r.add_argument("--eval-examples", type=int, default=RunOptions.eval_examples)
    r.add_argument("--json", action="store_true")
    add_options(r)
    r.set_defaults(handler=cmd_run)
