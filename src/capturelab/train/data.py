"""Examples to token batches: loss on the completion only, the prompt cut from the left."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from capturelab.dataset.example import Example

IGNORE = -100  # label value the loss skips (prompt and padding)


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]


def tokenize(examples: Sequence[Example], tokenizer: Any, max_seq_len: int) -> list[Tokenized]:
    """Prompt + completion + EOS; an over-long prompt keeps its most recent tokens."""
    out: list[Tokenized] = []
    eos = tokenizer.eos_token_id
    for ex in examples:
        prompt = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
        completion = [*tokenizer(ex.completion, add_special_tokens=False)["input_ids"], eos]
        completion = (
            completion[: max_seq_len // 2] if len(completion) > max_seq_len // 2 else completion
        )
        room = max_seq_len - len(completion)
        prompt = prompt[-room:] if room > 0 else []
        out.append(Tokenized(prompt + completion, [IGNORE] * len(prompt) + completion))
    return out


def collate(items: Sequence[Tokenized], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors: input_ids, attention_mask, labels."""
    import torch  # noqa: PLC0415 - heavy import

    width = max(len(i.input_ids) for i in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids[row, :n] = torch.tensor(item.input_ids)
        labels[row, :n] = torch.tensor(item.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batches(
    items: Sequence[Tokenized], batch_size: int, seed: int, *, shuffle: bool = True
) -> Iterator[list[Tokenized]]:
    """Endless batches: shuffled each pass (the same order for the same seed), or in order."""
    rng = random.Random(seed)  # noqa: S311 - data order, not cryptography
    order = list(range(len(items)))
    while True:
        if shuffle:
            rng.shuffle(order)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield [items[j] for j in order[i : i + batch_size]]
        if len(order) < batch_size:
            yield [items[j] for j in order]


def tokens_in(batch: dict[str, Any]) -> int:
    return int(batch["attention_mask"].sum().item())
