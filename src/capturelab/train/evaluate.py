"""Held-out evaluation: did the fine-tune help? The same sessions, base model against adapter.

- perplexity of the completions (the next actions), prompt tokens excluded;
- next-action accuracy: greedy decoding from the prompt, the first generated line against the
  first true action, exact match;
- two trivial baselines on the same examples (repeat the last action; the most frequent first
  action of the training split), so a reader can tell learning from copying.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from capturelab.dataset.example import NEXT_HEADER, Example, first_action
from capturelab.train.data import IGNORE, Tokenized, collate


def perplexity(
    model: Any, items: Sequence[Tokenized], *, pad_id: int, device: str, batch_size: int
) -> float:
    import torch  # noqa: PLC0415

    total_nll = 0.0
    total_tokens = 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(items), batch_size):
            batch = {k: v.to(device) for k, v in collate(items[i : i + batch_size], pad_id).items()}
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            shift_logits = logits[:, :-1, :].float()
            shift_labels = batch["labels"][:, 1:]
            nll = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)),
                shift_labels.reshape(-1),
                ignore_index=IGNORE,
                reduction="sum",
            )
            total_nll += float(nll)
            total_tokens += int((shift_labels != IGNORE).sum())
    return math.exp(total_nll / max(total_tokens, 1))


def predict_first_actions(
    model: Any, tokenizer: Any, examples: Sequence[Example], *, device: str, max_prompt_tokens: int
) -> list[str]:
    import torch  # noqa: PLC0415

    model.eval()
    out = []
    with torch.no_grad():
        for ex in examples:
            ids = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"][-max_prompt_tokens:]
            inputs = torch.tensor([ids], device=device)
            generated = model.generate(
                input_ids=inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=24,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            text = tokenizer.decode(generated[0, len(ids) :], skip_special_tokens=True)
            out.append(first_action(text))
    return out


def last_action(prompt: str) -> str:
    history = prompt.removesuffix(NEXT_HEADER).rstrip("\n").splitlines()
    return history[-1].strip() if history else ""


def evaluate(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    items: Sequence[Tokenized],
    train_examples: Sequence[Example],
    *,
    device: str,
    max_prompt_tokens: int,
    batch_size: int = 4,
) -> dict[str, Any]:
    """Base (adapter disabled) and tuned figures on the same held-out examples."""
    truth = [ex.first_action for ex in examples]

    def accuracy(predicted: Sequence[str]) -> float:
        return round(
            sum(p == t for p, t in zip(predicted, truth, strict=True)) / max(len(truth), 1), 4
        )

    results: dict[str, Any] = {"examples": len(examples)}
    variants: list[tuple[str, AbstractContextManager[Any]]] = [
        ("base", model.disable_adapter()),
        ("tuned", nullcontext()),
    ]
    for name, context in variants:
        with context:
            results[name] = {
                "perplexity": round(perplexity(model, items, pad_id=tokenizer.pad_token_id, device=device,
                                               batch_size=batch_size), 4),
                "next_action_accuracy": accuracy(
                    predict_first_actions(model, tokenizer, examples, device=device,
                                          max_prompt_tokens=max_prompt_tokens)
                ),
            }  # fmt: skip
    common = Counter(ex.first_action for ex in train_examples).most_common(1)
    results["baselines"] = {
        "repeat_last_action": accuracy([last_action(ex.prompt) for ex in examples]),
        "most_frequent_action": accuracy([common[0][0] if common else ""] * len(examples)),
    }
    results["helped"] = bool(
        results["tuned"]["perplexity"] < results["base"]["perplexity"]
        and results["tuned"]["next_action_accuracy"] >= results["base"]["next_action_accuracy"]
    )
    return results
