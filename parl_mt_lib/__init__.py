"""parl-mt: a runnable reproduction of PARL-MT (progress-aware multi-turn function calling).

Every module has one job (dependency order, roughly bottom-up):

* ``runtime``          errors, paths, thread count, atomic writes, provenance, artifact fingerprints, side-by-side jobs
* ``stats``            intervals, done once: t over seeds, Wilson over items, paired bootstrap over tasks
* ``progress_format``  the one definition of ``<summary>…</summary><plan>…</plan>`` + calls: write, parse, validate
* ``calls``            safe parser (model text -> ``Call``, never executed) and order/type-free call comparison
* ``bfcl``             BFCL multi-turn entries from the pinned package (gold calls normalised to keywords)
* ``env``              BFCL environment state + executor (dispatch only to public methods of the entry's classes)
* ``envs``             the benchmark protocol (task, environment, user source, scorer) and its registry;
                       ``envs.bfcl`` registers BFCL and the synthetic tasks
* ``context``          context builders (full history, progress-aware) and chat-template prompt / mask helpers
* ``rollout``          the driver: turn by turn, step by step, batched across episodes, on the protocol only
* ``policies``         generators: oracle, scripted (``MockModel``), HF causal LM, OpenAI-compatible endpoint
* ``backends``         the rollout-backend contract and registry (``rollout_backend`` in RL recipes)
* ``models``           ``toy`` | ``smollm2`` | local dir (model or adapter) | hub id -> (model, tokenizer), one code path
* ``toy_model``        the embedded tiny Qwen2 + BPE tokenizer trained on BFCL text
* ``evaluate``         BFCL's official checker (sanitised), the resumable evaluation runner, metrics.json, CLI
* ``engine_pool``      one started evaluation engine reused across ``evaluate`` calls with the same key (06)
* ``synth``            synthetic training tasks from environment interaction (perturbed states, rejection sampling)
* ``splits``           train/test hygiene: overlap rules and checks, BFCL hold-out splits
* ``dev_split``        dev tasks for choosing hyperparameters, never evaluation entries (the ``*_dev_probe`` scripts)
* ``recipe_io``        YAML recipe -> dataclass, value types checked; what a recipe's bf16 means on this machine
* ``progress``         teachers (template | hf | openai) and the teacher policy
* ``pag``              per-step PAG examples, verification, augmentation, SFT views
* ``pag_build``        the PAG pipeline: dataset + card written atomically; ``load_pag``
* ``sft``              SFT recipes and training (TRL ``SFTTrainer`` + PEFT LoRA), the SFT grid cells
* ``sft_eval``         held-out metrics: free-running (headline) and teacher-forced (diagnosis only)
* ``rewards``          the reward registry: small pure functions of one step, by name + weight
* ``grpo``             group / turn advantages, completion-only log-probs, the clipped GRPO loss
* ``rl_recipe``        RL recipes (validated), the RL training / held-out task split, how a checkpoint is played
* ``rl_samples``       rollouts -> scored episodes -> step samples with advantages and sampler log-probs
* ``rl_update``        policy model, reference, the optimiser update (log-prob gap), checkpoints
* ``rl``               the RL loop for PAG-RL and MT-GRPO, its metrics and seeds grid
* ``grid``             one runner for every seeds x variants grid (fingerprint-keyed reuse)
* ``compare``          the six-way comparison through ``evaluate``, paired differences over tasks, the RL cost table
* ``ablations``        notebook 07's rows as grid stages (PAG build, SFT, RL, evaluation), reuse, budget, paired deltas
* ``figures``          notebook 08: the paper's figures and tables from ``results/`` alone (PNG + CSV + LaTeX)
* ``tables``           README's result tables generated from ``results/`` (``make tables``): the main block and
                       ``make reproduce-small``'s block from ``results/small/``
* ``tour``, ``plots``  benchmark statistics / replays / prompt growth; figures
* ``bench``            throughput benchmarks (``make bench``)
"""
__version__ = "0.1.0"
