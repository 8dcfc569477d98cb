"""Ray Train: 2-worker DDP matches 1 worker on the same global batch; rerunning a run name resumes;
a worker's epochs read its shard in the stored or a seeded shuffled order."""

from __future__ import annotations

import glob
import io
import os
import tempfile

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from distill.student import StudentConfig, build_student
from distill.train import PREF_EXAMPLE_SCHEMA, TrainConfig, epoch_batches, preference_dataset, train_preferences


def _png(rgb) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), tuple(int(x) for x in rgb)).save(buf, "PNG")
    return buf.getvalue()


def _examples(n: int = 16, k: int = 5) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table({
        "persona_text": [f"persona {i} likes colour {i % 3}" for i in range(n)],
        "images": [[_png(rng.integers(0, 255, 3)) for _ in range(k)] for _ in range(n)],
        "teacher": [list(rng.dirichlet(np.ones(k)).astype(np.float32)) for _ in range(n)],
    }, schema=PREF_EXAMPLE_SCHEMA)


@pytest.mark.slow
def test_epoch_batches_stored_order_or_a_seeded_shuffle_per_epoch(ray_local):
    ds = ray_local.data.range(300, override_num_blocks=1)  # one block: Ray Data's block order cannot vary

    def order(cfg: TrainConfig, epoch: int) -> list[int]:
        return [int(i) for batch in epoch_batches(ds.iterator(), cfg, epoch, batch_size=32) for i in batch["id"]]

    assert order(TrainConfig(), 0) == order(TrainConfig(), 1) == list(range(300))
    shuffled = TrainConfig(shuffle_buffer=64)
    first, again, second = order(shuffled, 0), order(shuffled, 0), order(shuffled, 1)
    assert sorted(first) == sorted(second) == list(range(300))  # every example, once per epoch
    assert first != list(range(300)) and first != second        # another order each epoch
    assert first == again                                       # seeded: a rerun sees the same orders
    assert order(TrainConfig(shuffle_buffer=64, seed=1), 0) != first


def test_execution_fields_are_train_config_fields():
    assert TrainConfig.EXECUTION_FIELDS < set(TrainConfig.model_fields)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # Ray Train start-up x runs, on shared 2-core machines
def test_ddp_matches_single_worker_and_resume(ray_local, tmp_path):
    start = build_student(StudentConfig(arch="tiny-test"))
    start.save(str(tmp_path / "start"))
    scfg = StudentConfig(arch="tiny-test", pretrained=str(tmp_path / "start"))
    table = _examples()
    runs = str(tmp_path / "runs")
    # one full-batch step per epoch, so every step sees the same global batch on 1 or 2 workers
    base = dict(batch_size=16, epochs=3, loss="listwise_kl", seed=0)
    one = train_preferences(preference_dataset(table, start), scfg, TrainConfig(num_workers=1, **base), "one", runs)
    two = train_preferences(preference_dataset(table, start), scfg, TrainConfig(num_workers=2, **base), "two", runs)
    l1 = [h["loss"] for h in one.history]
    l2 = [h["loss"] for h in two.history]
    assert len(l1) == len(l2) == 3
    assert l1[-1] < l1[0]  # it learns
    np.testing.assert_allclose(l2, l1, rtol=1e-4, atol=1e-6)
    assert one.checkpoint_id != start.checkpoint_id

    # same run name, more epochs: continues from step 3 with the earlier history intact,
    # reading the checkpoint in place (no checkpoint copy left behind in the temp dir)
    copies = os.path.join(tempfile.gettempdir(), "checkpoint_tmp_*")
    before = set(glob.glob(copies))
    more = train_preferences(preference_dataset(table, start), scfg,
                             TrainConfig(num_workers=2, **{**base, "epochs": 5}), "two", runs)
    steps = [h["step"] for h in more.history]
    assert steps == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([h["loss"] for h in more.history[:3]], l2, rtol=1e-6)
    assert more.history[3]["loss"] < l2[0]
    assert set(glob.glob(copies)) == before


@pytest.mark.slow
def test_a_local_head_trains_without_the_placement_group_cleaner(ray_local):
    """The cleaner polls the State API, which the dashboard-less local head lacks: on a run that
    succeeded it logged a GetTimeoutError (or ConnectionError) traceback. A local head dies with
    its driver, so the trainer leaves the cleaner out there; Ray's other callbacks stay."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from distill.ray_utils import torch_trainer_class

    def names(cls) -> list[str]:
        trainer = cls(lambda: None, scaling_config=ray.train.ScalingConfig(num_workers=1))
        return [type(cb).__name__ for cb in trainer._create_default_callbacks()]

    ours, ray_default = names(torch_trainer_class()), names(TorchTrainer)
    assert "PlacementGroupCleanerCallback" in ray_default
    assert ours == [n for n in ray_default if n != "PlacementGroupCleanerCallback"]
