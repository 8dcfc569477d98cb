"""The product's real teacher: an open-weight vision-language model served in-process by vLLM.

One judge call = one match view = one prompt: the persona and the instruction first (shared by
all of one persona's matches, so vLLM's prefix caching pays), then the k candidate images, each
after its label line ("Image A:", "Image B:", ...), in ONE multi-image user turn rendered by the
model's own chat template. The answer is ONE generated token restricted to the k label tokens
(``SamplingParams(max_tokens=1, allowed_token_ids=<k label ids>, logprob_token_ids=<k label ids>)``)
and the engine runs with ``logprobs_mode="raw_logprobs"``, so the returned log-probabilities are
the model's own, over the whole vocabulary, before the constraint: their sum of probabilities is
the **label mass** (how much of its belief the model put on the labels at all, recorded per view
as ``extras["label_mass"]``), and renormalised over the k labels they are exactly the constrained
distribution. The score vector is that distribution, sharpened or flattened by
``label_temperature``. Nothing is parsed from text: zero unparsable answers.

The label token ids are those the model would emit *at the answer position*: the chat template is
rendered with the generation prompt, and each label's token is the first token of the assistant
reply "A", "B", ... as the same template renders it (``answer_label_ids``). A template whose answer
starts with a space gets the " A" tokens, not the out-of-context "A" that the model rarely emits
there (the constrained distribution over rare tokens still looks confident; the mass does not).

Import discipline: this module imports only numpy, pillow, pydantic and the judge protocol at
module level, so the driver (which has no vLLM; on CPU machines vLLM lives in its own venv, see
``scripts/make_vllm_env.sh``) can read and validate a ``VLMJudgeConfig``. vLLM is imported when a
judge is built, inside the judge actor. Judgements hold plain numpy arrays, never torch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from distill.images import ImageError, prepare_image
from distill.judges.base import Judge, Judgement, MatchView, softmax
from distill.schemas import PERSONA_MAX_CHARS

#: Option labels in shown order. 20 = vLLM's default ``max_logprobs``.
LABELS = "ABCDEFGHIJKLMNOPQRST"
PROMPTS_DIR = Path(__file__).with_name("prompts")


class VLMJudgeConfig(BaseModel):
    """A VLM teacher on vLLM. Engine settings, sampling and prompt in one place.

    The defaults are for a GPU node. On a CPU machine (tests, the tiny model) set
    ``dtype="bfloat16"``, ``enforce_eager=True``, ``kv_cache_gib`` (e.g. 1) and a small
    ``gpu_memory_utilization`` (on CPU it is the share of host RAM vLLM may claim).
    Where the judge actors run (GPUs per actor = ``tensor_parallel_size``, accelerator type, the
    vLLM venv's ``py_executable`` on CPU) is the tournament's judge-pool configuration.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    kind: Literal["vlm"] = Field("vlm", description="Selects this judge in a judge config.")

    # ---- the model and engine -------------------------------------------------------------------
    model: str = Field(description="Hugging Face hub name (e.g. 'Qwen/Qwen2.5-VL-7B-Instruct') or a local directory with config, weights, tokenizer and processor files.")
    tokenizer: str | None = Field(None, description="Tokenizer name or path when it differs from `model`.")
    trust_remote_code: bool = Field(False, description="Allow model code from the model repository (needed by some VLMs, e.g. InternVL).")
    dtype: str = Field("auto", description="Weight/activation dtype passed to vLLM: 'auto', 'bfloat16', 'float16' or 'float32'. CPU: 'bfloat16'.")
    max_model_len: int = Field(8192, gt=0, description="Longest prompt + answer in tokens. A match costs roughly (text tokens + k x image tokens); images are capped by the pixel budget below.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine (one judge actor owns one tensor-parallel group).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Share of GPU memory vLLM may claim (weights + activations + KV cache). On CPU: share of host RAM, keep it small (0.3) and set kv_cache_gib.")
    kv_cache_gib: float | None = Field(None, gt=0, description="Explicit KV-cache size in GiB (vLLM's kv_cache_memory_bytes; replaces the VLLM_CPU_KVCACHE_SPACE env var on CPU). None: vLLM sizes the cache from gpu_memory_utilization.")
    max_num_seqs: int = Field(64, ge=1, description="Most matches the engine schedules in one step (its batch size).")
    enable_prefix_caching: bool = Field(True, description="Reuse the KV cache of the shared system + persona + instruction prefix across one persona's matches.")
    enforce_eager: bool = Field(False, description="Skip torch.compile / CUDA graphs: slower steps but a much faster engine start. True on CPU.")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Any further vllm.LLM keyword arguments (override the ones derived from the fields above).")

    chat_template: str | None = Field(None, description="Jinja chat template replacing the model's own (inline text, or a path to a .jinja file). The label token ids are derived from the template in use at its answer position.")

    # ---- sampling and scores --------------------------------------------------------------------
    seed: int = Field(0, description="vLLM engine seed. Scores are label log-probabilities, which do not depend on sampling, so the same match view gets the same scores under any seed; requests are not seeded individually.")
    label_temperature: float = Field(1.0, gt=0, description="Temperature applied to the k label log-probabilities: scores = softmax(logp / T). 1 keeps the model's distribution, < 1 sharpens, > 1 flattens.")

    # ---- prompt and images ----------------------------------------------------------------------
    prompt_version: str = Field("persona_choice_v1", description="Prompt template: a file name in distill/judges/prompts/ (without .txt) or a path to a .txt template. Recorded with every match.")
    max_k: int = Field(8, ge=2, le=len(LABELS), description="Most images in one match; sets vLLM's limit_mm_per_prompt and the label alphabet used (A.. in order).")
    image_max_side: int = Field(448, ge=28, description="Images are downscaled (aspect kept) so their longer side is at most this many pixels before they reach the engine.")
    image_max_pixels: int | None = Field(None, ge=28 * 28, description="Pixel budget per image (width x height) applied after image_max_side; None: image_max_side squared.")

    def engine_args(self) -> dict[str, Any]:
        """Keyword arguments for ``vllm.LLM``."""
        args: dict[str, Any] = dict(
            model=self.model,
            tokenizer=self.tokenizer,
            trust_remote_code=self.trust_remote_code,
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            tensor_parallel_size=self.tensor_parallel_size,
            gpu_memory_utilization=self.gpu_memory_utilization,
            max_num_seqs=self.max_num_seqs,
            enable_prefix_caching=self.enable_prefix_caching,
            enforce_eager=self.enforce_eager,
            seed=self.seed,
            limit_mm_per_prompt={"image": self.max_k, "video": 0},
            # the model's own log-probabilities (before the label constraint): their mass on the
            # labels is recorded, and renormalised over the labels they are the constrained ones
            logprobs_mode="raw_logprobs",
            max_logprobs=max(20, self.max_k),
            disable_log_stats=True,
        )
        if self.kv_cache_gib is not None:
            args["kv_cache_memory_bytes"] = int(self.kv_cache_gib * (1 << 30))
        args.update(self.engine_kwargs)
        return {k: v for k, v in args.items() if v is not None}

    def build(self) -> "VLMJudge":
        return VLMJudge(self)

    def template_text(self) -> str | None:
        """The chat template override as text (read from the file when it names one)."""
        if self.chat_template is None:
            return None
        path = Path(self.chat_template)
        if len(self.chat_template) < 4096 and "{" not in self.chat_template and path.is_file():
            return path.read_text(encoding="utf-8")
        return self.chat_template


_PROBE_TURN = [{"role": "user", "content": "Which image fits the persona best? Answer with its letter."}]


def answer_label_ids(tokenizer: Any, labels: str, chat_template: str | None = None) -> list[int]:
    """The token id the model would emit for each label right after the generation prompt.

    Renders a user turn with the generation prompt, and the same turn followed by an assistant
    reply that is just the label; the reply's text beyond the prompt (e.g. " A<|im_end|>") is
    tokenized in context, and its first token is the label's answer token. When the prompt's own
    last token would merge with the reply (a template ending in a space), the reply is tokenized
    alone, as the model continues after the prompt's tokens. Refuses a token that is more or less
    than the label (after whitespace / "▁"), and repeated ids.
    """
    kwargs: dict[str, Any] = {"chat_template": chat_template} if chat_template else {}
    try:
        prompt = tokenizer.apply_chat_template(_PROBE_TURN, tokenize=False, add_generation_prompt=True, **kwargs)
    except Exception as e:  # noqa: BLE001  (jinja and tokenizer errors of many kinds)
        raise ValueError(f"cannot render the chat template: {type(e).__name__}: {e}") from None
    prompt_ids = list(tokenizer.encode(prompt, add_special_tokens=False))
    ids: list[int] = []
    for label in labels:
        full = tokenizer.apply_chat_template(_PROBE_TURN + [{"role": "assistant", "content": label}],
                                             tokenize=False, **kwargs)
        if not full.startswith(prompt):
            raise ValueError("the chat template does not render an assistant reply after its generation prompt; "
                             "set judge.chat_template to one that does")
        reply = full[len(prompt):]
        both = list(tokenizer.encode(prompt + reply, add_special_tokens=False))
        if both[:len(prompt_ids)] == prompt_ids and len(both) > len(prompt_ids):
            token = both[len(prompt_ids)]
        else:
            token = tokenizer.encode(reply, add_special_tokens=False)[0]
        text = tokenizer.decode([token])
        if text.replace("\u2581", " ").strip() != label:
            raise ValueError(f"option label {label!r} is not a single token at the answer position "
                             f"(the reply starts with token {token} = {text!r})")
        ids.append(int(token))
    if len(set(ids)) != len(ids):
        raise ValueError(f"option labels map to repeated token ids {ids}")
    return ids


@dataclass(frozen=True)
class PromptTemplate:
    """A versioned prompt file: ``[prefix]``, ``[image]`` and ``[suffix]`` sections."""

    name: str
    prefix: str
    image: str
    suffix: str

    @classmethod
    def load(cls, name_or_path: str) -> "PromptTemplate":
        path = Path(name_or_path)
        if path.suffix != ".txt" or not path.exists():
            path = PROMPTS_DIR / f"{name_or_path}.txt"
        if not path.exists():
            known = sorted(p.stem for p in PROMPTS_DIR.glob("*.txt"))
            raise FileNotFoundError(f"prompt template {name_or_path!r} not found (known: {known})")
        sections: dict[str, list[str]] = {}
        current: str | None = None
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if stripped in ("[prefix]", "[image]", "[suffix]"):
                current = stripped[1:-1]
                sections[current] = []
            elif current is None:
                if stripped and not stripped.startswith("#"):
                    raise ValueError(f"{path}: text before the first section: {line!r}")
            else:
                sections[current].append(line)
        missing = {"prefix", "image", "suffix"} - sections.keys()
        if missing:
            raise ValueError(f"{path}: missing sections {sorted(missing)}")
        text = {k: "\n".join(v).strip("\n") for k, v in sections.items()}
        # the [image] and [suffix] sections start on a new line after the previous part
        return cls(name=path.stem, prefix=text["prefix"], image="\n" + text["image"].strip("\n"),
                   suffix="\n" + text["suffix"].strip("\n"))

    def text_parts(self, persona: str, k: int) -> tuple[str, list[str], str]:
        """(prefix, one label line per image, suffix) for a k-way match.

        A persona over ``PERSONA_MAX_CHARS`` (the limit ingest and the endpoint enforce) fails
        its view: a Parquet written outside ingest must not buy unbounded prompts."""
        if len(persona) > PERSONA_MAX_CHARS:
            raise ViewError(f"persona text has {len(persona)} characters; the limit is {PERSONA_MAX_CHARS}")
        labels = LABELS[:k]
        listed = ", ".join(labels[:-1]) + " or " + labels[-1]
        prefix = self.prefix.format(persona=persona.strip())
        lines = [self.image.format(label=label) for label in labels]
        suffix = self.suffix.format(labels=listed, k=k)
        return prefix, lines, suffix


class ViewError(Exception):
    """A problem with one match view (its images); fails that view only."""


class ImagePromptJudge(Judge):
    """What the VLM and the API judge share: a config given whole or as fields (the ``plugin``
    kind passes fields), the versioned prompt, the per-image pixel budget, and an identity
    ``<kind>/<model>/<setting>/prompt=.../T=.../side=.../px=...``."""

    payload_columns = ("image",)
    config_class: type[BaseModel]
    kind: str

    def _init_common(self, config: Any, fields: dict[str, Any]) -> None:
        if config is None:
            config = self.config_class(**fields)
        elif isinstance(config, dict):
            config = self.config_class(**config, **fields)
        elif fields:
            raise TypeError(f"pass either a {self.config_class.__name__} or its fields, not both")
        self.config = config
        self.template = PromptTemplate.load(config.prompt_version)
        self._max_pixels = config.image_max_pixels or config.image_max_side ** 2

    def _setting(self) -> str:
        """The one setting besides the shared ones that changes the answers."""
        raise NotImplementedError

    @property
    def judge_id(self) -> str:
        c = self.config
        return (f"{self.kind}/{c.model}/{self._setting()}/prompt={self.template.name}/T={c.label_temperature:g}"
                f"/side={c.image_max_side}/px={self._max_pixels}")

    @property
    def prompt_version(self) -> str:
        return self.template.name

    def view_images(self, view: MatchView) -> list[Image.Image]:
        """The view's images within the pixel budget; a bad k or image fails this view only."""
        if not 2 <= view.k <= self.config.max_k:
            raise ViewError(f"match has {view.k} candidates; this judge takes 2..{self.config.max_k}")
        try:  # the one decode every model shares (distill.images): same pixels as the student
            return [prepare_image(c.image, f"candidate {c.item_id}", self.config.image_max_side, self._max_pixels)
                    for c in view.candidates]
        except ImageError as err:
            raise ViewError(str(err)) from None


class VLMJudge(ImagePromptJudge):
    """Scores k-way match views with one constrained token of a VLM served by ``vllm.LLM``."""

    config_class = VLMJudgeConfig
    kind = "vlm"

    def __init__(self, config: VLMJudgeConfig | dict[str, Any] | None = None, *, llm: Any | None = None,
                 **fields: Any):
        """``VLMJudge(config)``, or ``VLMJudge(**config_fields)`` (what the ``plugin`` judge kind
        does with its options). ``llm``: an already built ``vllm.LLM`` to reuse."""
        from vllm import LLM, SamplingParams  # in the judge actor only
        from vllm.exceptions import VLLMClientError

        self._init_common(config, fields)
        config = self.config
        self._sampling_params = SamplingParams
        # errors that reject one request; anything else means the engine itself is broken
        self._request_errors = (ValueError, TypeError, VLLMClientError)
        self.llm = llm if llm is not None else LLM(**config.engine_args())
        self._chat_template = config.template_text()
        self.label_token_ids = answer_label_ids(self.llm.get_tokenizer(), LABELS[:config.max_k], self._chat_template)

    # ---- identity -------------------------------------------------------------------------------
    def _setting(self) -> str:
        setting = f"dtype={self.config.dtype}"
        if self._chat_template is not None:
            import hashlib

            setting += "/chat=" + hashlib.blake2b(self._chat_template.encode(), digest_size=4).hexdigest()
        return setting

    # ---- requests -------------------------------------------------------------------------------
    def messages(self, persona: str, images: list[Image.Image]) -> list[dict[str, Any]]:
        """One user turn: persona + instruction, then "Image A:" + image, ..., then the question."""
        prefix, lines, suffix = self.template.text_parts(persona, len(images))
        content: list[dict[str, Any]] = [{"type": "text", "text": prefix}]
        for line, image in zip(lines, images):
            content.append({"type": "text", "text": line})
            content.append({"type": "image_pil", "image_pil": image})
        content.append({"type": "text", "text": suffix})
        return [{"role": "user", "content": content}]

    def _request(self, view: MatchView):
        k = view.k
        images = self.view_images(view)
        # No per-request seed: the scores are log-probabilities, which sampling does not touch,
        # and on CPU a seeded request whose prefill is chunked kills vLLM 0.29's engine (it
        # rewinds the generator with a CUDA-only call). The sampled token itself is ignored.
        params = self._sampling_params(
            max_tokens=1,
            temperature=1.0,  # label_temperature is applied to the returned log-probabilities
            allowed_token_ids=self.label_token_ids[:k],
            logprob_token_ids=self.label_token_ids[:k],  # every label's raw log-probability
            logprobs=k,
        )
        return self.messages(view.persona_text, images), params

    def _score(self, view: MatchView, output: Any) -> Judgement:
        k = view.k
        ids = self.label_token_ids[:k]
        completion = output.outputs[0]
        if not completion.logprobs:
            return Judgement.failed("engine returned no log-probabilities")
        step = completion.logprobs[0]
        missing = [LABELS[i] for i, t in enumerate(ids) if t not in step]
        if missing:
            return Judgement.failed(f"engine returned no log-probability for labels {missing}")
        logp = np.array([step[t].logprob for t in ids], dtype=np.float64)
        if not np.isfinite(logp).any():
            return Judgement.failed("all label log-probabilities are -inf")
        logp = np.where(np.isfinite(logp), logp, -1e30)
        scores = softmax(logp, self.config.label_temperature)
        extras: dict[str, float] = {"prompt_tokens": float(len(output.prompt_token_ids or ())),
                                    "label_mass": float(np.exp(logp).sum())}
        if getattr(output, "num_cached_tokens", None) is not None:
            extras["cached_tokens"] = float(output.num_cached_tokens)
        return Judgement(scores=scores, extras=extras)

    def _generate(self, requests: list) -> list:
        return self.llm.chat([m for m, _ in requests], [p for _, p in requests], use_tqdm=False,
                             chat_template=self._chat_template)

    def judge(self, views: list[MatchView]) -> list[Judgement]:
        out: list[Judgement | None] = [None] * len(views)
        pending: list[int] = []
        requests = []
        for i, view in enumerate(views):
            try:
                requests.append(self._request(view))
                pending.append(i)
            except ViewError as e:
                out[i] = Judgement.failed(str(e))
            except Exception as e:  # noqa: BLE001  (one bad view never fails the batch)
                out[i] = Judgement.failed(f"could not build the request: {type(e).__name__}: {e}")
        if pending:
            try:
                outputs = self._generate(requests)
            except self._request_errors:  # one request was rejected (e.g. too long): isolate it
                outputs = []
                for req in requests:
                    try:
                        outputs.append(self._generate([req])[0])
                    except self._request_errors as e:
                        outputs.append(e)
            # any other error (a dead engine) propagates: the actor dies, Ray replaces it and
            # the batch is retried, instead of every match being recorded as failed
            for i, output in zip(pending, outputs):
                if isinstance(output, Exception):
                    out[i] = Judgement.failed(f"engine rejected the match: {type(output).__name__}: {output}")
                else:
                    try:
                        out[i] = self._score(views[i], output)
                    except Exception as e:  # noqa: BLE001
                        out[i] = Judgement.failed(f"could not read the engine output: {type(e).__name__}: {e}")
        return [j if j is not None else Judgement.failed("not judged") for j in out]
