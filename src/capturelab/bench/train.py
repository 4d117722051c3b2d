"""``capturelab bench train``: capturelab's training loop against a plain Hugging Face Trainer.

Both sides get the same base model (loaded fresh for each), the same LoRA, the same tokenized
examples, batch size, sequence length, learning rate and number of optimizer steps, on the same
device in the same process. Each reports tokens/s (padding excluded, counted by the collator
both share), steps/s and its own peak memory (CUDA: ``max_memory_allocated`` since a reset;
CPU: the peak resident set sampled during that side's run).

The model is ``--model`` (smollm2, a directory, a .gguf) or ``--synthetic-llama`` with the
dimensions of a Llama 7B (or ``tiny``) and random weights: right for throughput, meaningless
for quality. On CUDA the 7B is quantized to 4 bits (QLoRA), as on the processing node.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from capturelab import authority
from capturelab.collector.synth import as_events, build_session
from capturelab.consent import ConsentRecord, LawfulBasis, Scope, sign_grant
from capturelab.dataset.build import BuildOptions, build
from capturelab.dataset.example import Example, read_examples
from capturelab.errors import InputError
from capturelab.schema import Batch, encode_batch
from capturelab.sink import grants
from capturelab.sink.layout import Layout
from capturelab.sink.store import SegmentStore
from capturelab.train.data import Tokenized, batches, collate, tokenize, tokens_in
from capturelab.train.loop import LoraOptions, TrainOptions, add_lora, train
from capturelab.train.model import ModelSpec, load, resolve

# Llama-2-7B's dimensions (the vocabulary is the tokenizer's; see notes).
LLAMA_SIZES: dict[str, dict[str, Any]] = {
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
           "num_attention_heads": 32, "num_key_value_heads": 32},
    "tiny": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 4},
}  # fmt: skip


class _RssPeak:
    """The peak resident set of this process while the block runs (sampled every 20 ms)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(0.02)

    def __enter__(self) -> _RssPeak:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def synthetic_examples(sessions: int = 6, seconds: float = 180) -> list[Example]:
    """Examples built by the real dataset builder from synth sessions (no store needed)."""
    pseudonym = bytes(32)
    with tempfile.TemporaryDirectory(prefix="capturelab-bench-train-") as tmp:
        store = SegmentStore(Path(tmp) / "store")
        t0 = int(time.time() * 1e9) - sessions * 3600 * 10**9
        seq = 0
        for i in range(sessions):
            session = build_session(100 + i, seconds, canaries=False)
            events = as_events(session, seq, t0 + i * 3600 * 10**9)
            seq += len(events)
            for j in range(0, len(events), 500):
                store.put(
                    encode_batch(Batch("bench", pseudonym, tuple(events[j : j + 500]))), "bench"
                )
        store.flush()
        store.close()
        record = ConsentRecord(
            pseudonym.hex(),
            frozenset({Scope.KEYS_TEXT, Scope.MOUSE, Scope.CONTEXT}),
            LawfulBasis.CONSENT,
            datetime.fromtimestamp(t0 / 1e9 - 1, tz=UTC),
            datetime.fromtimestamp(t0 / 1e9 + (sessions + 1) * 3600, tz=UTC),
        )
        # A throwaway consent authority: the builder counts only grants it signed.
        signer = authority.generate(Path(tmp) / "authority.key", Path(tmp) / "authority.pub")
        grants.record(Layout(Path(tmp) / "store"), record, sign_grant(signer, pseudonym, record))
        options = BuildOptions(eval_fraction=0, trust_file=Path(tmp) / "authority.pub")
        built = build(Path(tmp) / "store", Path(tmp) / "out", options)
        return read_examples(built.path / "train.jsonl")


def synthetic_llama(size: str, tokenizer_spec: ModelSpec, directory: Path) -> ModelSpec:
    """A Llama with ``size``'s dimensions and random weights, saved (bf16) under ``directory``."""
    import torch  # noqa: PLC0415
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: PLC0415

    if size not in LLAMA_SIZES:
        raise InputError(f"--synthetic-llama {size!r} is not one of {', '.join(LLAMA_SIZES)}")
    kwargs: dict[str, Any] = {"local_files_only": True}
    if tokenizer_spec.gguf_file:
        kwargs["gguf_file"] = tokenizer_spec.gguf_file
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_spec.directory, **kwargs)
    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=4096, **LLAMA_SIZES[size]
    )
    torch.manual_seed(0)
    model: Any = LlamaForCausalLM(config)
    model = model.to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    del model
    return ModelSpec(f"random Llama {size} (vocab {len(tokenizer)})", directory, None)


@dataclass(frozen=True)
class Side:
    tokens_per_s: float
    steps_per_s: float
    tokens: int
    wall_s: float
    peak_memory_bytes: int
    peak_memory_source: str
    final_loss: float

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _peak(device: str, sampler: _RssPeak) -> tuple[int, str]:
    if device == "cuda":
        import torch  # noqa: PLC0415

        return int(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
    return sampler.peak, "peak RSS of the process during this side (VmRSS, 20 ms samples)"


def run_ours(
    model: Any, items: Sequence[Tokenized], pad_id: int, device: str, options: TrainOptions
) -> Side:
    with _RssPeak() as sampler:
        result = train(model, items, pad_id=pad_id, device=device, options=options, shuffle=False)
    peak, source = _peak(device, sampler)
    return Side(
        result["tokens_per_s"],
        result["steps_per_s"],
        result["tokens"],
        result["wall_s"],
        peak,
        source,
        result["loss_curve"][-1],
    )


def run_reference(
    model: Any,
    items: Sequence[Tokenized],
    pad_id: int,
    device: str,
    *,
    options: TrainOptions,
    tmp: Path,
) -> Side:
    import torch  # noqa: PLC0415
    from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: PLC0415

    counted = {"tokens": 0}
    clock: dict[str, float] = {}

    class Clock(TrainerCallback):
        """Time the training loop itself (after the Trainer's set-up), like ours is timed."""

        def on_train_begin(self, *_args: Any, **_kwargs: Any) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
            clock["start"] = time.perf_counter()

        def on_train_end(self, *_args: Any, **_kwargs: Any) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
            clock["end"] = time.perf_counter()

    def collator(batch: list[Tokenized]) -> dict[str, Any]:
        out = collate(batch, pad_id)
        counted["tokens"] += tokens_in(out)
        return out

    args = TrainingArguments(
        output_dir=str(tmp / "hf-trainer"),
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        max_steps=options.steps,
        learning_rate=options.learning_rate,
        warmup_steps=max(1, int(options.steps * options.warmup_fraction)),
        lr_scheduler_type="linear",
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=device == "cuda",
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        train_sampling_strategy="sequential",  # the same batches as ours, in the same order
        remove_unused_columns=False,
        seed=options.seed,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=list(items),
        data_collator=collator,
        callbacks=[Clock()],
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    with _RssPeak() as sampler:
        trainer.train()
    wall = clock["end"] - clock["start"]
    peak, source = _peak(device, sampler)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return Side(
        round(counted["tokens"] / wall, 2),
        round(options.steps / wall, 4),
        counted["tokens"],
        round(wall, 3),
        peak,
        source,
        float(losses[-1]) if losses else float("nan"),
    )


def fresh(spec: ModelSpec, device: str, quantize: str, lora: LoraOptions) -> tuple[Any, Any]:
    model, tokenizer = load(spec, device=device, quantize=quantize)
    return add_lora(model, lora, quantized=quantize == "4bit"), tokenizer


def bench(
    *,
    model: str,
    synthetic: str | None,
    dataset: Path | None,
    device: str,
    quantize: str,
    lora: LoraOptions,
    options: TrainOptions,
    work: Path,
) -> dict[str, Any]:
    """Reference first, then ours, each on a freshly loaded model; returns both sides."""
    import torch  # noqa: PLC0415

    examples = read_examples(dataset / "train.jsonl") if dataset else synthetic_examples()
    if not examples:
        raise InputError(f"{dataset}: no training examples to benchmark with")
    spec = resolve(model)
    if synthetic:
        spec = synthetic_llama(synthetic, spec, work / f"llama-{synthetic}")
    if quantize == "auto":
        quantize = "4bit" if device == "cuda" else "none"
    ref_model, tokenizer = fresh(spec, device, quantize, lora)
    tokenized = tokenize(examples, tokenizer, options.max_seq_len)
    # Both sides train on exactly these batches, in this order (one shuffled pass's worth).
    needed = options.steps * options.grad_accum
    items = [
        t
        for batch in islice(batches(tokenized, options.batch_size, options.seed), needed)
        for t in batch
    ]
    reference = run_reference(
        ref_model, items, tokenizer.pad_token_id, device, options=options, tmp=work
    )
    del ref_model
    if device == "cuda":
        torch.cuda.empty_cache()
    our_model, _ = fresh(spec, device, quantize, lora)
    ours = run_ours(our_model, items, tokenizer.pad_token_id, device, options)
    return {
        "model": spec.name,
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "quantize": quantize,
        "examples": len(examples),
        "reference": reference.to_dict(),
        "ours": ours.to_dict(),
    }
