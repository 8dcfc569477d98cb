"""Connecting to Ray the same way from every job: an existing cluster when there is one, else local."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

REPO_ROOT = str(Path(__file__).resolve().parents[1])
_STARTED_LOCAL_HEAD = False  # whether init_ray started the local Ray this process uses


def init_ray(num_cpus: int | None = None) -> None:
    """Join ``RAY_ADDRESS`` (set by ``ray job submit``) or start a fresh local Ray; idempotent.

    A local head started here needs no auth token (``RAY_AUTH_MODE=disabled``), and its
    worker processes get this repository on ``PYTHONPATH``, so a checkout runs without an
    install and judge plugins import in actors as they do in the driver.
    """
    global _STARTED_LOCAL_HEAD
    if ray.is_initialized():
        return
    # Ray copies the driver script's directory onto its workers' sys.path; for `python jobs/x.py`
    # that is jobs/, where jobs/distill.py would shadow the `distill` package in every actor (and
    # bench/distill.py for `python bench/x.py`). The driver has already imported what it needs,
    # and workers get the repo root instead.
    script_dirs = {os.path.join(REPO_ROOT, d) for d in ("jobs", "bench")}
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) not in script_dirs]
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # A fresh local instance, never a guess: Ray's own default would join whatever `ray start`
        # head this machine last ran, even a dead one. To use a cluster, set RAY_ADDRESS (as
        # `ray job submit` does). A local instance binds to this machine's own address only.
        _STARTED_LOCAL_HEAD = True
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True,
                 # Workers inherit this process's environment: HF_HOME, HF_TOKEN, HF_ENDPOINT and the
                 # offline setting distill.hub chose for the config (never forced here).
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false",
                                           "PYTHONPATH": os.pathsep.join(
                                               p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p)}})
    show_ray_data_progress()


FOOTER_READERS_ENV = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"
FOOTER_BATCH_ENV = "RAY_DATA_PARQUET_FOOTER_BATCH_SIZE"  # files per footer-reader call (Ray's default: 10)
_USER_FOOTER_READERS = os.environ.get(FOOTER_READERS_ENV)  # a value the user set wins over our sizing


@contextmanager
def footer_readers_for(n_files: int) -> Iterator[None]:
    """Within the block, Ray Data lists Parquet footers with one reader per call's worth of files
    (``RAY_DATA_PARQUET_FOOTER_BATCH_SIZE``, 10 by default), at most one per cluster CPU (and 32).

    Why: Ray Data (2.60) starts a pool of ``RAY_DATA_PARQUET_FOOTER_NUM_ACTORS`` (32 by default)
    ``FooterReader`` actors for every ``read_parquet`` and kills it when the listing is done,
    whatever the number of files. On a 2-CPU node that was 32 actor start-ups (a process each,
    ~2-3 s of CPU) for a catalog of a few parts, most of the actor start-ups of a distillation
    run. Sized to the files, one reader instead of two cut three 206-item embedding passes from
    ~72 to ~61 CPU-s, and a large catalog on a large cluster keeps one reader per CPU. Ray reads
    the setting in the driver when ``read_parquet`` creates the dataset (checked: setting it only
    around the execution left two readers), so the block holds that call; wrap any new
    ``read_parquet`` the same way. A value the user set is kept."""
    if _USER_FOOTER_READERS is not None:
        yield
        return
    before = os.environ.get(FOOTER_READERS_ENV)
    per_call = max(1, int(os.environ.get(FOOTER_BATCH_ENV) or 10))
    need = -(-max(1, n_files) // per_call)
    os.environ[FOOTER_READERS_ENV] = str(max(1, min(need, 32, light_task_slots())))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(FOOTER_READERS_ENV, None)
        else:
            os.environ[FOOTER_READERS_ENV] = before


def light_task_slots() -> int:
    """How many light (0-CPU, I/O) tasks to keep in flight: the cluster's CPU count, at least 2.

    Why bounded at all: a 0-CPU task needs no free core, so Ray would run every one at once and
    start a new worker process for each. On a small node those start-ups (~1.5 s of Python
    imports each, two at a time) cost more than the reads: one task per part of a 12-part catalog
    took 10 s on a fresh 2-CPU Ray, against 1.5 s with two in flight reusing their workers."""
    return max(2, int(ray.cluster_resources().get("CPU", 2)))


def fan_out(fn: Callable, calls: Iterable[tuple], max_in_flight: int | None = None,
            on_result: Callable[[Any], None] | None = None) -> list[Any]:
    """Run ``fn(*call)`` as 0-CPU Ray tasks over ``calls``, at most ``max_in_flight`` at once
    (default ``light_task_slots()``); results in completion order.

    0 CPUs because these tasks read Parquet or wait on judge actors, which may hold every CPU of
    a small machine; the bound keeps the worker pool (and the scheduler's queue) small."""
    task = ray.remote(num_cpus=0)(fn)
    limit = max_in_flight or light_task_slots()
    results: list[Any] = []
    pending: list[Any] = []
    todo = iter(calls)
    while True:
        while len(pending) < limit and (call := next(todo, None)) is not None:
            pending.append(task.remote(*call))
        if not pending:
            break
        done, pending = ray.wait(pending, num_returns=1)
        result = ray.get(done[0])
        if on_result is not None:
            on_result(result)
        results.append(result)
    return results


def show_ray_data_progress(enabled: bool = True) -> None:
    """Ray Data's progress on long work (embedding a catalog, a tournament round): one bar per
    dataset, not one per operator, so our own round bars stay readable. On a terminal Ray draws
    bars; under ``ray job submit`` or CI (no TTY) it logs progress lines every few seconds, which
    the ``ray.data`` logger lets through while its other chatter stays at WARNING."""
    import logging

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = enabled
    ctx.enable_operator_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.INFO if enabled else logging.WARNING)


def torch_trainer_class() -> type:
    """Ray Train's ``TorchTrainer``; on a local head this process started, without its
    ``PlacementGroupCleaner``.

    Why: the cleaner is a detached actor that polls Ray's State API to remove the placement group
    of a controller that died without cleaning up, which matters on a long-lived cluster. The State
    API is served by the dashboard, which ``init_ray``'s local head does not run, so there the
    poll hangs and a run that succeeded ends with the controller logging a ``GetTimeoutError``
    traceback ("Failed to stop PlacementGroupCleaner gracefully"), or with a ``ConnectionError``
    when several local Rays share the machine. A local head dies with its driver, taking every
    placement group with it, so the cleaner has nothing to guard. On a cluster (``RAY_ADDRESS``,
    e.g. under ``ray job submit``) Ray's own trainer, cleaner included, is used unchanged.
    """
    from ray.train.torch import TorchTrainer

    if not _STARTED_LOCAL_HEAD:
        return TorchTrainer

    class LocalHeadTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self):  # Ray Train v2 builds its callbacks here
            return [cb for cb in super()._create_default_callbacks()
                    if type(cb).__name__ != "PlacementGroupCleanerCallback"]

    return LocalHeadTorchTrainer
