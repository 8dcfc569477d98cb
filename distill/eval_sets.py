"""Evaluation sets: where does the teacher's tournament winner land in each model's ranking of a catalog?

For held-out personas the teacher plays a k-way knockout over the whole held-out catalog
(``distill.tournament``); each model scores every catalog item for the persona, and the
winner's percentile (share of items scored strictly below it, ties against it) gives MPR,
the median percentile and hit@k (``distill.metrics``). On the demo world the same is reported
against the true best product under the hidden utility, and every figure is split by whether
the target's motif was seen in training or held out. Tables, verdicts and plots over these rows
live in ``distill.report``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distill.metrics import dense_counts, metrics_from_counts


@dataclass
class EvalSet:
    """Held-out personas, the held-out catalog (by id: its images stay in the dataset root's parts)
    and the teacher's tournament winner per persona."""

    persona_ids: list[str]
    persona_texts: list[str]
    item_ids: list[str]
    titles: list[str]
    winners: list[int]              # index into item_ids of each persona's tournament winner
    heldout: np.ndarray | None = None   # (N,) bool: item's motif is held out of training (demo world)
    true_best: list[int] | None = None  # demo world: argmax of the hidden utility
    teacher_calls: int = 0
    root: str | None = None         # the dataset root the items are read from
    split: str | None = None        # their catalog split
    subset: bool = True             # item_ids are a sample of the split (else the whole split)
    embeddings: str | None = None   # where students' embeddings of this catalog are cached (one dir per student)


def _row(name: str, es: EvalSet, winners: tuple[np.ndarray, np.ndarray],
         true_best: tuple[np.ndarray, np.ndarray] | None, n_items: int) -> dict:
    """One table row from (below, at_or_above) counts of the winners (and of the true best)."""
    below, ge = winners
    row = {"model": name, **metrics_from_counts(below, ge, n_items)}
    if true_best is not None:
        row["true_best"] = metrics_from_counts(*true_best, n_items)
    if es.heldout is not None:
        held = es.heldout[np.asarray(es.winners, np.int64)]
        for label, sel in (("seen_motif", ~held), ("heldout_motif", held)):
            row[label] = metrics_from_counts(below[sel], ge[sel], n_items)
    row["percentiles"] = (np.asarray(below, np.float64) / n_items).tolist()
    return row


def evaluate_scores(name: str, scores: np.ndarray, es: EvalSet) -> dict:
    """One table row from a small dense (P, N) score matrix (the teacher's ceiling, tests)."""
    tb = dense_counts(scores, es.true_best) if es.true_best is not None else None
    return _row(name, es, dense_counts(scores, es.winners), tb, scores.shape[1])


def student_embeddings(checkpoint: str, es: EvalSet, cfg=None) -> str:
    """The student's embeddings of the evaluation catalog, through the one embedding pipeline
    (cached per student under ``es.embeddings``)."""
    from distill import storage
    from distill.embed import embed_catalog
    from distill.student import read_checkpoint_meta

    if es.root is None or es.embeddings is None:
        raise ValueError("this EvalSet has no dataset root / embeddings directory (build it with build_eval_set)")
    ckpt_hash = read_checkpoint_meta(checkpoint)["checkpoint_id"]
    out = storage.join(es.embeddings, ckpt_hash[:16])
    embed_catalog(es.root, checkpoint, out, cfg, split=es.split, item_ids=es.item_ids if es.subset else None,
                  checkpoint_hash=ckpt_hash)
    return out


def evaluate_student(name: str, checkpoint: str, es: EvalSet, embed_cfg=None) -> dict:
    """One table row for a student checkpoint: its catalog embeddings from the pipeline, the
    winners' percentiles and ranks by chunked counting over them (``distill.scoring``)."""
    from distill.scoring import rank_counts
    from distill.student import Student

    emb = student_embeddings(checkpoint, es, embed_cfg)
    queries = Student.load(checkpoint).encode_texts(list(es.persona_texts))
    sets = [[es.item_ids[w] for w in es.winners]]
    if es.true_best is not None:
        sets.append([es.item_ids[w] for w in es.true_best])
    counts = rank_counts(emb, queries, sets)
    tb = (counts.below[1], counts.at_or_above[1]) if es.true_best is not None else None
    return _row(name, es, (counts.below[0], counts.at_or_above[0]), tb, counts.n_items)


def build_eval_set(root: str, persona_split: str, catalog_split: str, max_personas: int | None,
                   max_candidates: int | None, judge, pool, tournament, output: str, demo: bool,
                   seed: int = 0, progress: bool = True) -> EvalSet:
    """Play (or reuse, from ``output``) the teacher's tournaments and assemble an :class:`EvalSet`."""
    from distill.tournament import DataConfig, job_specs, run_tournaments
    from distill.tournament.payload import read_items

    data = DataConfig(root=root, persona_split=persona_split, catalog_split=catalog_split,
                      max_personas=max_personas, max_candidates=max_candidates)
    # The engine reads the judge's columns (images included) by id from the catalog's parts; the
    # driver keeps ids and titles only, as the tournament job does.
    specs, source = job_specs(root, data, seed)
    result = run_tournaments(specs, source, tournament, judge, pool, output, progress=progress)
    catalog = read_items(source, list(specs[0].candidate_ids), ["title"])
    item_ids = catalog["item_id"].to_pylist()
    pos = {i: n for n, i in enumerate(item_ids)}
    winners = dict(zip(result.tournaments["tournament_id"].to_pylist(), result.tournaments["winner_id"].to_pylist()))
    es = EvalSet(persona_ids=[s.persona_id for s in specs], persona_texts=[s.persona_text for s in specs],
                 item_ids=item_ids, titles=catalog["title"].to_pylist(),
                 winners=[pos[winners[s.tournament_id]] for s in specs],
                 teacher_calls=int(result.summary.teacher_calls), root=root, split=catalog_split,
                 subset=max_candidates is not None, embeddings=output.rstrip("/") + "-embeddings")
    if demo:
        from distill import datasets
        from distill.world.truth import world_utility

        util = world_utility(root, es.persona_texts, item_ids)
        es.true_best = [int(np.argmax(u)) for u in util]
        attrs = datasets.read_catalog(root, split=catalog_split, columns=["item_id", "attributes"])
        held = {i: dict(a or []).get("heldout_motif") == "true"
                for i, a in zip(attrs["item_id"].to_pylist(), attrs["attributes"].to_pylist())}
        es.heldout = np.array([held[i] for i in item_ids])
    return es


def teacher_ceiling_scores(es: EvalSet) -> np.ndarray:
    """The text oracle ranking the whole catalog by title (the teacher without bias or noise): the ceiling."""
    from distill.text_encoder import shared_encoder

    enc = shared_encoder()
    return enc.encode(es.persona_texts) @ enc.encode(es.titles).T
