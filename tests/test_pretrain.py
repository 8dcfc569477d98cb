"""Caption pretraining's text side: titles, or captions built from the item's attributes."""

import pyarrow as pa
import pytest

from distill.pretrain import PretrainConfig, captions
from distill.schemas import CATALOG_SCHEMA


def _catalog() -> pa.Table:
    return pa.table({
        "item_id": ["p-1", "p-2"],
        "title": ["green tote bag with a sunflower print", "red mug with an owl print"],
        "image": [b"", b""],
        "split": ["train", "train"],
        "attributes": [[("article", "tote bag"), ("motif", "sunflower"), ("colour", "green")],
                       [("article", "mug"), ("motif", "owl"), ("colour", "red")]],
    }, schema=CATALOG_SCHEMA)


def test_captions_are_titles_by_default_or_filled_from_attributes():
    table = _catalog()
    assert captions(table, None) == table["title"].to_pylist()
    # the demo's colour-free captions: the teacher still reads the whole title
    assert captions(table, "{article} with a {motif} print") == ["tote bag with a sunflower print",
                                                                 "mug with a owl print"]
    assert captions(table, "{title}; {colour}") == ["green tote bag with a sunflower print; green",
                                                    "red mug with an owl print; red"]


def test_caption_template_naming_a_missing_field_is_a_clear_error():
    with pytest.raises(ValueError, match=r"names 'material'.*\['article', 'colour', 'motif', 'title'\]"):
        captions(_catalog(), "{material} {article}")
    with pytest.raises(ValueError, match="names 'article'"):
        captions(_catalog().drop_columns(["attributes"]), "{article}")


def test_pretrain_config_takes_a_template_from_the_command_line_syntax():
    from distill.config import build_config

    cfg = build_config(PretrainConfig, None, ["caption_template='{article} with a {motif} print'"])
    assert cfg.caption_template == "{article} with a {motif} print"


@pytest.mark.parametrize("template", ["{} print", "{0} print", "{article print", "{article!z}"])
def test_malformed_or_positional_templates_are_refused_at_config_time(template):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="caption_template"):
        PretrainConfig(caption_template=template)


def test_a_template_indexing_into_a_field_is_checked_against_the_items():
    cfg = PretrainConfig(caption_template="{article[0]}: {title}")  # parses; the empty dry fill cannot index
    assert captions(_catalog(), cfg.caption_template)[0] == "t: green tote bag with a sunflower print"
    with pytest.raises(ValueError, match=r"does not fit item .*string index out of range"):
        captions(_catalog(), "{article[9]}")


def test_empty_template_means_the_title():
    assert PretrainConfig(caption_template="").caption_template is None


def _pretrain_job_config():
    from distill.pretrain import PretrainJobConfig

    return PretrainJobConfig


@pytest.mark.parametrize("job", ["distill", "pretrain"])
def test_the_demo_world_pretrains_on_colour_free_captions_unless_told_otherwise(job):
    """Both jobs pretrain the same baseline: on the demo world (no root) the captions leave out the
    colour; any other field override keeps that; '' asks for the titles; a dataset root gets titles
    (its items need not have the demo's attributes)."""
    from distill.config import build_config
    from distill.distill_job import DistillJobConfig
    from distill.world.catalog import DEMO_CAPTION_TEMPLATE

    cls, prefix = (DistillJobConfig, "pretrain.") if job == "distill" else (_pretrain_job_config(), "")
    template = (lambda c: c.pretrain.caption_template) if job == "distill" else (lambda c: c.caption_template)
    assert DEMO_CAPTION_TEMPLATE == "{article} with a {motif} print"
    assert template(build_config(cls, None, [])) == DEMO_CAPTION_TEMPLATE
    assert template(build_config(cls, None, [f"{prefix}steps=4"])) == DEMO_CAPTION_TEMPLATE
    assert template(build_config(cls, None, [f"{prefix}caption_template=''"])) is None
    assert template(build_config(cls, None, [f"{prefix}caption_template='{{title}}!'"])) == "{title}!"
    assert template(build_config(cls, None, ["root=/data/shop"])) is None


def test_caption_pretrain_trains_on_the_templated_captions(tmp_path):
    """The template reaches the loss: the report shows the captions the text side encoded."""
    import io

    from PIL import Image

    from distill import datasets
    from distill.pretrain import caption_pretrain
    from distill.student import StudentConfig

    def png(colour: str) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), colour).save(buf, "PNG")
        return buf.getvalue()

    table = _catalog().set_column(2, "image", pa.array([png("green"), png("red")], pa.binary()))
    datasets.write_catalog_part(table, str(tmp_path / "root"), "train-00000")
    from distill import storage

    storage.write_json_atomic({"kind": "test"}, datasets.manifest_path(str(tmp_path / "root")))  # a complete root
    cfg = PretrainConfig(student=StudentConfig(arch="tiny-test"), caption_template="{article} with a {motif} print",
                         max_items=None, steps=2, batch_size=2, warmup_steps=0, threads=1)
    report = caption_pretrain(cfg, str(tmp_path / "root"), str(tmp_path / "student"), progress=False)
    assert report["caption_examples"] == ["tote bag with a sunflower print", "mug with a owl print"]
    assert report["steps"] == 2 and report["items"] == 2
