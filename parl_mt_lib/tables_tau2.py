"""README's τ-bench table (a section of :mod:`parl_mt_lib.tables`), from ``results/`` alone.

Inputs: ``05_evaluate/tau2_<domain>_oracle/metrics.json``, ``05_evaluate/tau2_<domain>_toy/metrics.json`` and
``small/05_tau2_<domain>_smollm2/metrics.json`` (``make reproduce-small``)
(``envs.tau2.evaluate_tau2``: ``categories``, ``tau2.pass_hat_k`` with ``pass^k`` / ``ci95`` per k, ``tau2.note``,
``tau2.do_nothing_floor``) and the τ-bench rows of ``06_compare/comparison.json`` (``table`` rows with a ``note``).
Every row says which user played the customer; the scripted user's rows say they are not comparable to published
numbers.

Example:
    >>> import tempfile
    >>> from parl_mt_lib.tables import _Results
    >>> lines = section_tau2(_Results(tempfile.mkdtemp()))
    >>> lines[0], lines[2]
    ('#### τ-bench: tau2 airline and retail test split (notebooks 05, 06)', '- not run: `results/05_evaluate/tau2_airline_oracle/metrics.json`')
"""
from __future__ import annotations

DOMAINS = ("airline", "retail")
RUNS = {"oracle": "oracle (gold actions)", "toy": "untrained toy",
        "smollm2": "untrained SmolLM2-135M-Instruct (vLLM, signatures docs)"}  # the last from make reproduce-small


def _rel(domain: str, kind: str) -> str:
    from .tables import INPUTS, OPTIONAL_INPUTS

    return {**INPUTS, **OPTIONAL_INPUTS}[f"tau2_{domain}_{kind}"]


def _pass_k(tau: dict) -> str:
    from .tables import _ci, _num

    p = tau.get("pass_hat_k") or {}
    hat, ci = p.get("pass^k") or {}, p.get("ci95") or {}
    return "; ".join(f"pass^{k} {_num(v)}{_ci(ci.get(k))}" for k, v in sorted(hat.items(), key=lambda kv: int(kv[0])))


def _row(domain: str, label: str, m: dict) -> list[str]:
    """One 05 run's row: domain, policy, successes / episodes, trials, pass^k, the do-nothing floor, the user."""
    from .tables import _num

    tau = m.get("tau2") or {}
    cat = next(iter((m.get("categories") or {}).values()), {})
    return [domain, label, f"{_num(cat.get('correct'))}/{_num(cat.get('total'))}", _num(tau.get("trials")),
            _pass_k(tau), _num(tau.get("do_nothing_floor")),
            f"{tau.get('user', '?')}" + (f" ({tau['note']})" if tau.get("note") else "")]


def _pass_table(rows: list, out: list) -> list[str]:
    from .tables import _table

    if not rows:
        return []
    return ([""] if out and out[-1] != "" else []) + _table(
        ["domain", "policy", "successes / episodes", "trials per task", "pass^k [95% Wilson over tasks]",
         "do-nothing floor", "user"], rows) + [
        "", "pass^k: all k of a task's trials succeed (tau2's estimator C(c, k) / C(n, k)), averaged over tasks. "
        "Do-nothing floor: the share of these tasks an agent that does nothing passes. Verdicts by tau2's own "
        "evaluator (DB + COMMUNICATE)."]


def section_tau2_small(res) -> list[str]:
    """``make reproduce-small``'s 05 runs (the untrained SmolLM2 on τ-bench), from a results root at
    ``results/small`` (``res.label``); nothing where they are absent. Its 06 τ-bench rows are in its six-way table."""
    rows, sources = [], []
    for domain in DOMAINS:
        rel = _rel(domain, "smollm2").removeprefix("small/")
        if not (res.root / rel).exists():
            continue
        m = res.json(rel)
        rows.append(_row(domain, RUNS["smollm2"], m))
        sources.append(f"- {res.source(rel, m)}")
    if not rows:
        return []
    out = ["#### τ-bench: the untrained model on the test split (notebook 05)"]
    return out + _pass_table(rows, out) + [""] + sources + [""]


def section_tau2(res) -> list[str]:
    """Notebook 05's τ-bench runs (pass^k per domain, the do-nothing floor, the user source) and notebook 06's
    τ-bench rows (task success per method)."""
    from .tables import OPTIONAL_INPUTS, _num, _table, provenance_line

    out = ["#### τ-bench: tau2 airline and retail test split (notebooks 05, 06)", ""]
    rows, sources = [], []
    for domain in DOMAINS:
        for kind, label in RUNS.items():
            rel = _rel(domain, kind)
            if rel in OPTIONAL_INPUTS.values() and not (res.root / rel).exists():
                continue  # make reproduce-small's row: absent is not "not run" (tables.OPTIONAL_INPUTS)
            m = res.json(rel)
            if m is None:
                out.append(res.not_run(rel))
                continue
            rows.append(_row(domain, label, m))
            sources.append(f"- {provenance_line(rel, m)}")
    out += _pass_table(rows, out)
    c = res.json("06_compare/comparison.json")
    tau_rows = [r for r in (c or {}).get("table") or [] if isinstance(r, dict) and r.get("note")]
    if tau_rows:
        from .tables import METHODS, _ci

        benches = list(dict.fromkeys(r.get("benchmark") for r in tau_rows))
        methods = list(dict.fromkeys(r.get("method") for r in tau_rows))
        by = {(r.get("method"), r.get("benchmark")): r for r in tau_rows}
        body = []
        for b in benches:
            first = next(by[m, b] for m in methods if (m, b) in by)
            body.append([f"{b} ({_num(first.get('n_items'))} tasks, floor {_num(first.get('do_nothing_floor'))})"] + [
                _num(by[m, b].get("mean")) + _ci([by[m, b].get("ci95_low"), by[m, b].get("ci95_high")])
                if (m, b) in by else "—" for m in methods])
        seeds = sorted({r.get("n_seeds") for r in tau_rows})
        out += ["", "Six-way comparison on τ-bench (notebook 06; " + tau_rows[0]["note"] + "; "
                f"{'/'.join(map(str, seeds))} run(s) per method: the first training seed only, for the budget):", ""]
        out += _table(["task success"] + [METHODS.get(m, m) for m in methods], body)
        sources.append(f"- {provenance_line('06_compare/comparison.json', c)}")
    return out + ([""] + sources if sources else []) + [""]
