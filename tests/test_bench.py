"""Benchmarks that cannot rot: every script in bench/ runs at its smoke size, and every library name
a bench imports exists.

* ``test_bench_smoke`` (slow, one per line of ``BENCHES``): runs the bench as users do (``python bench/x.py``,
  the repository on ``PYTHONPATH``) with its smoke arguments, then parses its machine-readable last
  line (``<bench>: key=value ...``) and checks the listed figures are there and sane (finite, rates
  positive, shares within [0, 1]); unlisted keys may hold anything (a load average, nan for a
  figure not measured yet). It checks nothing about speed: performance targets live in the
  benches' full runs, never in tests.
* ``test_bench_imports_resolve`` (fast): every ``from distill/serving... import name`` in a bench
  (top level or inside a function) and every ``module.attr`` on such an imported module names
  something that exists, so deleting or renaming a library name a bench uses fails
  ``make test-fast`` too, without running anything.
* ``test_every_bench_runs_in_ci`` (fast): a new script in bench/ without a line in ``BENCHES``
  fails, so no bench goes untested.

Adding a bench is one line in ``BENCHES``: its script, smoke arguments (``{fixture}`` fills in a
pytest fixture's value, e.g. the tiny VLM's path) and the checks of its last line.
"""

from __future__ import annotations

import ast
import importlib
import math
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Formatter

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
LIBRARY_PACKAGES = ("distill", "serving")


# ---- checks on one figure of a bench's last line ----------------------------------------------------

def positive(v: float) -> bool:
    return v > 0


def fraction(v: float) -> bool:
    return 0 <= v <= 1


def percent(v: float) -> bool:
    return 0 <= v <= 100


def non_negative(v: float) -> bool:
    return v >= 0


def equals(x: float) -> Callable[[float], bool]:
    def check(v: float) -> bool:
        return v == x

    check.__name__ = f"equals({x:g})"
    return check


def between(lo: float, hi: float) -> Callable[[float], bool]:
    def check(v: float) -> bool:
        return lo <= v <= hi

    check.__name__ = f"between({lo:g}, {hi:g})"
    return check


@dataclass(frozen=True)
class Bench:
    """One bench in CI: ``bench/<script>`` run with ``args``; ``checks`` maps every key its last line
    must hold to a check of the value."""

    script: str
    args: tuple[str, ...]
    checks: dict[str, Callable[[float], bool]] = field(default_factory=dict)
    label: str = ""  # tells apart two runs of one script in test ids

    @property
    def name(self) -> str:
        return Path(self.script).stem

    @property
    def test_id(self) -> str:
        return f"{self.name}-{self.label}" if self.label else self.name

    def fixtures(self) -> list[str]:
        return [f for a in self.args for _, f, _, _ in Formatter().parse(a) if f]


BENCHES = [
    Bench("teacher.py", ("--smoke", "--model", "{tiny_vlm}", "--py-executable", "{vllm_python}"), {
        "tournament_matches_per_s": positive, "batched_matches_per_s": positive, "naive_matches_per_s": positive,
        "batched_over_naive": positive, "prompt_tokens": positive, "cached_tokens": non_negative,
        "engine_start_s": positive, "calls_per_persona_n4096": equals(1024),
        "prompt_tokens_ratio_k8_vs_k2": between(0.05, 1)}),
    Bench("tournament.py", ("--smoke",), {
        "noop_matches_per_s": positive, "oracle_matches_per_s": positive, "calls_per_persona": positive,
        "calls_formula_equal": equals(1), "pairwise_over_k_calls": between(1, 5),
        "unbiased_true_percentile": between(0.5, 1), "biased_agreement": fraction,
        "debiased_agreement": fraction, "debiased_true_percentile": fraction, "debiased_views": equals(2),
        "debiased_calls_ratio": equals(2)}),
    Bench("distill.py", ("--smoke",), {
        "train_samples_per_s_1w": positive, "train_samples_per_s_2w": positive, "ddp_ratio_2w_over_1w": positive,
        "examples": equals(32)}),
    Bench("distill_signal.py", ("--smoke",), {
        "start_val_mpr": percent, "ceiling_val_mpr": between(90, 100), "readout_val_mpr": percent,
        "runs": equals(2), "best_val_mpr": percent, "best_gain_pp": between(-100, 100),
        "best_teacher_calls": equals(16), "mean_top1_agreement": fraction}),
    # --block-rows 128: the 4 parts, read as one block, reach the pool as 4 blocks (so the writer makes >1 file)
    Bench("embed.py", ("--smoke", "--block-rows", "128"), {
        "ratio_vs_loop": positive, "pipeline_img_per_s": positive, "loop_img_per_s": positive, "images": equals(512),
        "files": between(2, 4)}),
    # --smoke stands its two smoke sizes in for 100 k and 1 M; index_build_1m_s is nan until the build is wired
    Bench("scale.py", ("--smoke",), {"rss_ratio_1m_vs_100k": positive, "noop_matches_per_s_1m": positive}),
    # --direct-ingress: the bench's one extra code path (the replica's own port); the proxy path differs only in its URL
    Bench("serving.py", ("--smoke", "--direct-ingress"), {
        "closed_qps": positive, "ratio_vs_ceiling": positive, "ceiling_qps": positive, "p99_ms_at_50qps": positive,
        "noop_p99_ms_at_50qps": positive, "recall10_persona": fraction, "onnx_top10_agreement": fraction,
        "search_value": positive}),
    # --recall-only: step 1 alone (index tuning on the validation personas, no Serve)
    Bench("serving.py", ("--smoke", "--recall-only"), {
        "recall10_persona": fraction, "search_value": positive, "search_ms": positive}, label="recall-only"),
]
# Benches known to lack a smoke setting yet, and why (none today); test_every_bench_runs_in_ci fails
# for any other script in bench/ without a line above, and for one of these once it takes --smoke.
PENDING: dict[str, str] = {}


# a hang guard, not a speed check: a smoke run takes about a minute on an idle 2-core box and up to
# ~9 minutes when the box is shared by many jobs; a stalled one must not eat make test's 25 minutes
SMOKE_TIMEOUT_S = 600

# a line Ray forwards from a worker's output, e.g. "(BenchHost pid=123) ..." (maybe ANSI-coloured): it
# can reach the driver's stdout after the bench's own last line
RAY_WORKER_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?\([^)]*pid=\d+[^)]*\)")


def parse_last_line(stdout: str, name: str) -> dict[str, float | str]:
    """``<name>: key=value ...`` from the last line of ``stdout`` (blank lines and Ray's forwarded
    worker lines aside): numbers as floats, anything else (e.g. a load average) as text."""
    lines = [line for line in stdout.splitlines() if line.strip() and not RAY_WORKER_LINE.match(line)]
    assert lines, "the bench printed nothing"
    last = lines[-1]
    assert last.startswith(f"{name}: "), f"last line is not '{name}: key=value ...': {last!r}"
    figures: dict[str, float | str] = {}
    for pair in last[len(name) + 2:].split():
        key, sep, value = pair.partition("=")
        assert sep and key and value, f"not a key=value pair: {pair!r} in {last!r}"
        try:
            figures[key] = float(value)
        except ValueError:
            figures[key] = value
    return figures


@pytest.mark.slow
@pytest.mark.parametrize("bench", BENCHES, ids=lambda b: b.test_id)
def test_bench_smoke(bench: Bench, request, tmp_path):
    values = {f: str(request.getfixturevalue(f)) for f in bench.fixtures()}
    args = [a.format(**values) for a in bench.args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, str(BENCH_DIR / bench.script), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    figures = parse_last_line(proc.stdout, bench.name)
    missing = sorted(set(bench.checks) - set(figures))
    assert not missing, f"{bench.name}: the last line lacks {missing}; it holds {figures}"
    bad = {k: (figures[k], check.__name__) for k, check in bench.checks.items()
           if not isinstance(figures[k], float) or not math.isfinite(figures[k]) or not check(figures[k])}
    assert not bad, f"{bench.name}: implausible figures {bad}"


# ---- fast: no bench runs ------------------------------------------------------------------------

def bench_scripts() -> list[Path]:
    return sorted(p for p in BENCH_DIR.glob("*.py") if not p.name.startswith("_"))


def library_references(tree: ast.AST) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    """(imports, attribute uses): ``(module, name, line)`` for every ``from <library module> import
    name`` anywhere in the file, and ``(alias, attr, line)`` for every ``alias.attr`` where ``alias``
    was bound by ``import <library module>`` or ``from <library package> import <module>``."""
    imports, attrs = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in LIBRARY_PACKAGES:
            imports += [(node.module, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            imports += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] in LIBRARY_PACKAGES]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            attrs.append((node.value.id, node.attr, node.lineno))
    return imports, attrs


def broken_references(tree: ast.AST) -> list[str]:
    """The library names ``tree`` imports or uses as ``module.attr`` that do not exist."""
    imports, attrs = library_references(tree)
    modules = {}  # alias -> imported library module, for alias.attr checks
    broken = []
    for module, name, line in imports:
        try:
            mod = importlib.import_module(module)
        except ImportError as err:
            broken.append(f"line {line}: import {module}: {err}")
            continue
        if not name:
            top = module.split(".")[0]
            modules[top] = importlib.import_module(top)
            continue
        if name == "*":
            continue
        if hasattr(mod, name):
            value = getattr(mod, name)
        else:
            try:  # a submodule its package does not import itself
                value = importlib.import_module(f"{module}.{name}")
            except ImportError:
                broken.append(f"line {line}: from {module} import {name}: no such name")
                continue
        if isinstance(value, types.ModuleType):
            modules[name] = value
    for alias, attr, line in attrs:
        mod = modules.get(alias)
        if mod is not None and not hasattr(mod, attr):
            try:
                importlib.import_module(f"{mod.__name__}.{attr}")
            except ImportError:
                broken.append(f"line {line}: {alias}.{attr}: {mod.__name__} has no {attr!r}")
    return broken


@pytest.mark.parametrize("script", bench_scripts(), ids=lambda p: p.name)
def test_bench_imports_resolve(script: Path):
    broken = broken_references(ast.parse(script.read_text(), filename=str(script)))
    assert not broken, f"bench/{script.name} uses library names that do not exist:\n" + "\n".join(broken)


def test_every_bench_runs_in_ci():
    listed = {b.script for b in BENCHES}
    scripts = {p.name for p in bench_scripts()}
    untested = sorted(scripts - listed - set(PENDING))
    assert not untested, f"bench script(s) {untested} have no smoke run: add a line to BENCHES in {__file__}"
    grown = sorted(s for s in set(PENDING) & scripts if "--smoke" in (BENCH_DIR / s).read_text())
    assert not grown, f"{grown} now take --smoke: move them from PENDING to a line in BENCHES"
    assert not listed & set(PENDING), "a bench is both in BENCHES and PENDING"
    assert listed <= scripts, f"BENCHES names missing scripts: {sorted(listed - scripts)}"


def test_the_import_check_catches_a_missing_name():
    """The check itself: a name gone from a module (as REQUEST_SCHEMA once went and broke
    bench/teacher.py), a missing module attribute and a missing module are reported, also inside
    functions; real names are not."""
    src = ("from distill.tournament import bracket, TournamentConfig\n"
           "from distill.tournament.worker import NO_SUCH_SCHEMA\n"
           "def f():\n"
           "    from distill.tournament.engine import run_tournaments, no_such_runner\n"
           "    import distill.no_such_module\n"
           "    return bracket.teacher_calls, bracket.no_such_function\n")
    broken = broken_references(ast.parse(src))
    assert len(broken) == 4, broken
    for needle in ("NO_SUCH_SCHEMA", "no_such_runner", "distill.no_such_module", "no_such_function"):
        assert any(needle in b for b in broken), (needle, broken)
    assert broken_references(ast.parse(src.split("\n")[0])) == []
