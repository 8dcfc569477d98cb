"""Label quality you can see: how much probability the teacher put on the option labels.

A constrained judge (one answer token restricted to the k labels) always returns a clean
distribution over the k, even when the model would almost never answer with a label there (a
wrong label token, a prompt it misreads). The raw probability mass on the labels, recorded per
view in the match rows (``view_label_mass``), is the evidence. This module summarises it for run
reports and keeps views below a threshold out of the training labels: such a view is flagged
(counted in the summary) and the match's training distribution is averaged over its other views,
or the match is dropped when none is left. Judges that report no mass (the text oracle, an
endpoint without log-probabilities) are taken as they are: nothing says their labels are weak.

Why in the training labels and not the tournament: a tournament must still name a winner for
every match, and its record keeps every view; training is where a weak label does harm.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field


class LabelMassSummary(BaseModel):
    """The label mass of every judged view in a set of matches, against the training threshold."""

    views: int = Field(description="views judged (failed views included)")
    views_with_mass: int = Field(description="views whose judge reported a label mass")
    min_label_mass: float = Field(description="the threshold below which a view is flagged and kept out of training")
    flagged_views: int = Field(description="views with a mass below the threshold")
    mean: float | None = None
    p05: float | None = None
    min: float | None = None
    matches_without_training_label: int = Field(0, description="matches whose every scored view is flagged")


def _mass_rows(matches: pa.Table) -> list[list[float | None] | None]:
    if "view_label_mass" not in matches.column_names:
        return [None] * matches.num_rows
    return matches["view_label_mass"].to_pylist()


def mass_summary(matches: pa.Table, min_label_mass: float = 0.0) -> LabelMassSummary:
    """Count and describe the views' label masses (null masses are views without a figure)."""
    masses: list[float] = []
    views = flagged = no_label = 0
    orders = matches["view_orders"].to_pylist() if matches.num_rows else []
    scores = matches["view_scores"].to_pylist() if matches.num_rows else []
    for order, vs, ms in zip(orders, scores, _mass_rows(matches)):
        views += len(order)
        ms = ms or [None] * len(order)
        row = [float(m) for m in ms if m is not None]
        masses += row
        low = [m is not None and m < min_label_mass for m in ms]
        flagged += sum(low)
        scored = [v is not None for v in (vs or [None] * len(order))]
        if any(scored) and all(lo for lo, s in zip(low, scored) if s):
            no_label += 1
    arr = np.asarray(masses, dtype=np.float64)
    return LabelMassSummary(
        views=views, views_with_mass=len(masses), min_label_mass=min_label_mass, flagged_views=flagged,
        mean=float(arr.mean()) if len(arr) else None, p05=float(np.quantile(arr, 0.05)) if len(arr) else None,
        min=float(arr.min()) if len(arr) else None, matches_without_training_label=no_label)


def training_labels(matches: pa.Table, min_label_mass: float) -> pa.Table:
    """``matches`` with ``scores`` re-averaged over the views whose label mass is at least
    ``min_label_mass`` (views without a mass count as kept); matches left without a kept view get
    null scores, which the training table drops. The winner and the view records are untouched."""
    if matches.num_rows == 0 or min_label_mass <= 0:
        return matches
    new_scores = []
    for cands, order, vs, ms, old in zip(matches["candidate_ids"].to_pylist(), matches["view_orders"].to_pylist(),
                                         matches["view_scores"].to_pylist(), _mass_rows(matches),
                                         matches["scores"].to_pylist()):
        if old is None or not ms or all(m is None or m >= min_label_mass for m in ms):
            new_scores.append(old)
            continue
        total, kept = np.zeros(len(cands), dtype=np.float64), 0
        for o, s, m in zip(order, vs or [], ms):
            if s is None or (m is not None and m < min_label_mass):
                continue
            total[np.asarray(o)] += np.asarray(s, dtype=np.float64)
            kept += 1
        new_scores.append((total / kept).tolist() if kept else None)
    i = matches.schema.get_field_index("scores")
    return matches.set_column(i, matches.schema.field(i), pa.array(new_scores, type=matches.schema.field(i).type))
