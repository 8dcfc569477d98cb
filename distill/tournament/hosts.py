"""The judge pool: long-lived actors that host the teacher for a whole job, fed by block tasks.

Rounds are synchronous, so each round is its own fan-out of Ray tasks (one per block of
tournaments). If the judges were a per-pass pool (e.g. Ray Data's map actors), every round
would start a new pool and reload the teacher: for a VLM that is an engine start per round
(minutes on GPU). Instead the judges live in ``JudgeHostPool`` for the job; each round's
block tasks (``blocks.py``) send them batches with their candidates' payload.
The pool grows with the work (up to ``max_actors``) and is torn down when the job ends.

Fault tolerance is Ray's: hosts restart on death (``max_restarts=-1``) and a call lost with a
host is retried on its replacement (``max_task_retries=-1``). Judgements are seeded from the
match, so a retried batch gets the same answer.
"""

from __future__ import annotations

import math
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict, Field

from distill.tournament.worker import JudgeWorker


class JudgePoolConfig(BaseModel):
    """The autoscaling pool of judge actors (one per GPU, or per tensor-parallel group)."""

    model_config = ConfigDict(extra="forbid")
    min_actors: int = Field(1, ge=1, description="Actors started before the first round (each loads the judge once per job).")
    max_actors: int = Field(2, ge=1, description="Upper bound the pool grows to when a round has enough batches (e.g. the GPU count).")
    batch_size: int = Field(128, ge=1, description="Matches per judge call; a VLM batches all their views into one engine call.")
    batches_per_actor: int = Field(4, ge=1, description="A round with B batches uses up to ceil(B / this) actors before it grows the pool.")
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per actor.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor (1 per vLLM engine, or the tensor-parallel size).")
    accelerator_type: str | None = Field(None, description="Ray accelerator type, e.g. 'H100' or 'L4', so KubeRay scales the matching GPU group from zero.")
    py_executable: str | None = Field(None, description="Python of another virtualenv for the judge actors (the vLLM venv on CPU machines).")
    env_vars: dict[str, str] = Field(default_factory=dict, description="Extra environment for the judge actors.")

    def actor_options(self) -> dict[str, Any]:
        runtime_env: dict[str, Any] = {}
        if self.py_executable:
            runtime_env["py_executable"] = self.py_executable
        if self.env_vars:
            runtime_env["env_vars"] = dict(self.env_vars)
        options: dict[str, Any] = dict(num_cpus=self.num_cpus, max_restarts=-1, max_task_retries=-1)
        if self.num_gpus:
            options["num_gpus"] = self.num_gpus
        if self.accelerator_type:
            options["accelerator_type"] = self.accelerator_type
        if runtime_env:
            options["runtime_env"] = runtime_env
        return options


class JudgeHostPool:
    """Judge actors for one job; ``with`` guarantees they are released."""

    def __init__(self, cfg: JudgePoolConfig, judge_config: dict, winner_rule: str, attempt_id: str):
        self.cfg = cfg
        self._args = dict(judge_config=judge_config, winner_rule=winner_rule, attempt_id=attempt_id)
        self._cls = ray.remote(JudgeWorker).options(**cfg.actor_options())
        self.hosts: list[Any] = []  # ready to judge
        self._pending: dict[Any, Any] = {}  # ready() ref -> host still starting

    def __enter__(self) -> "JudgeHostPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def for_round(self, n_batches: int) -> list[Any]:
        """Grow the pool for a round of ``n_batches`` and return the hosts that are up.

        Requested hosts that cannot be placed yet (no free GPU until the autoscaler adds a
        node, or a small machine already full) are not waited for: the round runs on the
        hosts that are ready, at least one, and later rounds pick the others up.
        """
        want = min(self.cfg.max_actors, max(self.cfg.min_actors, math.ceil(n_batches / self.cfg.batches_per_actor)))
        while len(self.hosts) + len(self._pending) < want:
            host = self._cls.remote(**self._args)
            self._pending[host.ready.remote()] = host
        if self._pending:
            refs = list(self._pending)
            if not self.hosts:  # block for the first host only
                ray.wait(refs, num_returns=1)
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                ray.get(ref)  # surfaces a judge that failed to build, with its error
                self.hosts.append(self._pending.pop(ref))
        return self.hosts[:max(1, min(len(self.hosts), n_batches))]

    def payload_columns(self) -> list[str]:
        """The catalog columns the judge reads, asked of the first host that is up."""
        return ray.get(self.for_round(1)[0].payload_columns.remote())

    def shutdown(self) -> None:
        for host in self.hosts + list(self._pending.values()):
            ray.kill(host)
        self.hosts, self._pending = [], {}
