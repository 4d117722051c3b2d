"""The training example format (``docs/dataset.md``): given recent actions and context, the next ones.

One JSON object per line in ``train.jsonl`` / ``eval.jsonl``::

    {"id": "<session>-<index>", "session": "<session id>", "prompt": "...", "completion": "..."}

``prompt`` is ``### context`` (the focused window), ``### recent actions`` (up to ``history``
actions) and the header ``### next actions``; ``completion`` is up to ``horizon`` actions and
the end marker. A model is trained on the completion only and judged on its first action
(next-action accuracy) and on the completion's perplexity.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capturelab.dataset.actions import Action
from capturelab.errors import InputError

FORMAT = "capturelab-actions"
FORMAT_VERSION = 1
CONTEXT_HEADER = "### context\n"
HISTORY_HEADER = "### recent actions\n"
NEXT_HEADER = "### next actions\n"
END = "### end"


@dataclass(frozen=True)
class Example:
    id: str
    session: str
    prompt: str
    completion: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "session": self.session,
                "prompt": self.prompt,
                "completion": self.completion,
            },
            ensure_ascii=False,
            sort_keys=True,
        )

    @property
    def first_action(self) -> str:
        return first_action(self.completion)


def first_action(completion: str) -> str:
    """The first action line of a completion (what next-action accuracy compares)."""
    return completion.split("\n", 1)[0].strip()


def windows(
    session: str, actions: Sequence[Action], *, history: int, horizon: int, min_history: int
) -> Iterator[Example]:
    """Examples every ``horizon`` actions: the context, the history, and what came next."""
    focus = ""
    last_focus_at = -1
    for i in range(min_history, len(actions), horizon):
        for j in range(last_focus_at + 1, i):
            if actions[j].text.startswith("focus "):
                focus = actions[j].text
        last_focus_at = i - 1
        recent = [a.text for a in actions[max(0, i - history) : i]]
        target = [a.text for a in actions[i : i + horizon]]
        prompt = (
            f"{CONTEXT_HEADER}{focus or 'unknown'}\n{HISTORY_HEADER}"
            + "".join(f"{line}\n" for line in recent)
            + NEXT_HEADER
        )
        completion = "".join(f"{line}\n" for line in target) + END
        yield Example(f"{session}-{i:06d}", session, prompt, completion)


def read_examples(path: Path) -> list[Example]:
    """Read a split file; a bad line names the file, line and field."""
    out: list[Example] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the dataset split ({exc.strerror})") from None
    for n, line in enumerate(lines, 1):
        try:
            data: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}:{n}: expected an object")
        for key in ("id", "session", "prompt", "completion"):
            if not isinstance(data.get(key), str):
                raise InputError(f"{path}:{n}: field {key} must be a string")
        out.append(Example(data["id"], data["session"], data["prompt"], data["completion"]))
    return out
