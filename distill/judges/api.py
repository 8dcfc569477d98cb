"""A teacher behind an OpenAI-compatible chat endpoint: a remote ``vllm serve``, or a hosted VLM.

One judge call = one match view = one ``POST {base_url}/chat/completions`` with the same prompt as
the in-process VLM judge (``distill/judges/prompts/<prompt_version>.txt``: persona and
instruction, then "Image A:" + image, ..., then the question, in one multi-image user turn;
images downscaled to the pixel budget and sent as base64 data URLs).

Scores, in order of preference (``mode``):

- ``logprobs``: ``max_tokens=1, logprobs=true, top_logprobs=N``; the label tokens'
  log-probabilities (the bare label tokens "A", "B", ...; " A" is another token) are
  renormalised over exactly the k labels (``softmax(logp / T)``). That is
  the constrained distribution, the same as restricting the answer to the labels, because
  renormalising a softmax over a subset equals the softmax of that subset. On a vLLM server
  (``vllm_label_ids=true``) the label ids are looked up once with ``/tokenize`` and sent as
  ``allowed_token_ids`` (the answer is a label) and ``logprob_token_ids`` (every label's
  log-probability is returned even when it is not in the top N). Elsewhere a label missing from
  the top N gets the smallest returned log-probability (an upper bound on its true value) and
  the view's ``extras["labels_missing"]`` says how many; a view with no label in the top N fails.
  ``extras["label_mass"]`` is the probability of the labels found (the raw mass when the endpoint
  returns unconstrained log-probabilities; a vLLM server constraining the answer returns 1 unless it
  runs with ``--logprobs-mode raw_logprobs``).
- ``answer``: for endpoints without log-probabilities. Asked at temperature 0 with the view's
  seed (the OpenAI ``seed`` field), so a rerun of the same view asks for the same reply. The reply
  must be exactly one of the k labels (surrounding whitespace and a trailing period allowed, nothing else); its score vector
  is one-hot. Any other reply is *rejected*: that view fails with "rejected answer ..." and
  ``APIJudge.stats["rejected_answers"]`` counts it. ``structured_choice=true`` asks a vLLM server
  for ``structured_outputs={"choice": labels}`` so the answer is a label by construction.
- ``auto`` (default): ``logprobs`` until the endpoint refuses log-probabilities (a 400 that names
  them, or replies without them), then ``answer`` for the rest of the actor's life.

Transport: the standard library only (``urllib`` + a thread pool), so the judge runs in any
venv. At most ``max_concurrency`` requests in flight per judge actor (the pool's actor count
multiplies it); 429, 5xx, timeouts and connection errors are retried with exponential backoff
and jitter, honouring ``Retry-After``; other 4xx fail that view with the endpoint's message.
The API key is read from the environment variable named by ``api_key_env`` at request time; it
is never stored in the config, the judge id, a match record or a log line.

Nothing is paid twice: like every judge, judgements are staged per batch by the tournament's
round store and reused when a run is resumed (keyed by the run fingerprint, which includes this
config).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from distill.judges.base import Judgement, MatchView, softmax
from distill.judges.vlm import LABELS, ImagePromptJudge, ViewError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class APIJudgeConfig(BaseModel):
    """A VLM teacher behind any OpenAI-compatible chat-completions endpoint."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    kind: Literal["api"] = Field("api", description="Selects this judge in a judge config.")

    # ---- endpoint -------------------------------------------------------------------------------
    base_url: str = Field(description="The endpoint's OpenAI API root, e.g. 'http://10.0.0.5:8000/v1' (a vllm serve) or 'https://api.openai.com/v1'.")
    model: str = Field(description="Model name the endpoint serves (the `model` field of each request).")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Name of the environment variable holding the API key (sent as 'Authorization: Bearer ...'); unset or empty variable = no key. The key itself never appears in configs or logs.")
    extra_headers: dict[str, str] = Field(default_factory=dict, description="Further HTTP headers (no secrets: they are part of the config).")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="Further request-body fields, merged last (e.g. provider-specific sampling options).")

    # ---- scoring --------------------------------------------------------------------------------
    mode: Literal["auto", "logprobs", "answer"] = Field("auto", description="'logprobs': label log-probabilities -> distribution; 'answer': a strict single-label reply -> one-hot, other replies rejected and counted; 'auto': logprobs until the endpoint refuses them, then answer.")
    top_logprobs: int = Field(20, ge=1, le=100_000, description="How many top log-probabilities to ask for (OpenAI allows at most 20; a vLLM server up to its --max-logprobs).")
    vllm_label_ids: bool = Field(False, description="The endpoint is a vLLM server: look the label token ids up with /tokenize, and send allowed_token_ids (the answer is a label) and logprob_token_ids (every label's log-probability is returned).")
    structured_choice: bool = Field(False, description="vLLM server, answer mode: ask for structured_outputs={'choice': labels} so the reply is a label by construction.")
    label_temperature: float = Field(1.0, gt=0, description="Temperature on the label log-probabilities: scores = softmax(logp / T).")
    max_answer_tokens: int = Field(4, ge=1, le=64, description="max_tokens in answer mode (a label plus room for a stray space or period, which strict parsing then judges).")

    # ---- prompt and images (as the in-process VLM judge) ----------------------------------------
    prompt_version: str = Field("persona_choice_v1", description="Prompt template: a file name in distill/judges/prompts/ (without .txt) or a path to a .txt template. Recorded with every match.")
    max_k: int = Field(8, ge=2, le=len(LABELS), description="Most images in one match (labels A.. in order).")
    image_max_side: int = Field(448, ge=28, description="Images are downscaled (aspect kept) so their longer side is at most this many pixels.")
    image_max_pixels: int | None = Field(None, ge=28 * 28, description="Pixel budget per image (width x height); None: image_max_side squared.")
    image_format: Literal["PNG", "JPEG"] = Field("PNG", description="Encoding of the data URLs (JPEG is smaller on the wire, PNG is lossless).")

    # ---- transport ------------------------------------------------------------------------------
    max_concurrency: int = Field(8, ge=1, description="Most requests in flight per judge actor (total = this x pool actors).")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout in seconds (connect + response).")
    max_retries: int = Field(6, ge=0, description="Retries of one request after 429, 5xx, timeouts or connection errors.")
    backoff_s: float = Field(1.0, gt=0, description="First retry delay; doubles each retry (with +-25% jitter), capped by backoff_max_s; a Retry-After header (up to 600 s) wins when longer.")
    backoff_max_s: float = Field(60.0, gt=0, description="Longest delay between retries.")

    def build(self) -> "APIJudge":
        return APIJudge(self)


class EndpointError(Exception):
    """A request that failed for good (after retries, or a non-retryable status)."""

    def __init__(self, message: str, status: int | None = None, body: str = ""):
        super().__init__(message)
        self.status = status
        self.body = body


def _logprobs_refused(err: EndpointError) -> bool:
    return err.status == 400 and "logprob" in err.body.lower()


class APIJudge(ImagePromptJudge):
    """Scores k-way match views with one chat completion each on an OpenAI-compatible endpoint."""

    config_class = APIJudgeConfig
    kind = "api"

    def __init__(self, config: APIJudgeConfig | dict[str, Any] | None = None, **fields: Any):
        """``APIJudge(config)`` or ``APIJudge(**config_fields)`` (the ``plugin`` judge kind)."""
        self._init_common(config, fields)
        config = self.config
        self._mode = "logprobs" if config.mode in ("auto", "logprobs") else "answer"
        self._label_ids: list[int] | None = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=config.max_concurrency, thread_name_prefix="api-judge")
        #: counters since the judge was built (per actor)
        self.stats = {"requests": 0, "retries": 0, "rejected_answers": 0, "failed_views": 0, "labels_missing": 0}

    # ---- identity -------------------------------------------------------------------------------
    def _setting(self) -> str:
        return f"mode={self.config.mode}"

    @property
    def active_mode(self) -> str:
        """'logprobs' or 'answer' (auto mode switches once the endpoint refuses log-probabilities)."""
        return self._mode

    # ---- HTTP -----------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json", **self.config.extra_headers}
        key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _url(self, path: str) -> str:
        return self.config.base_url.rstrip("/") + path

    def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON with retries and backoff; the parsed JSON reply, or EndpointError."""
        c = self.config
        data = json.dumps(body).encode()
        delay = c.backoff_s
        for attempt in range(c.max_retries + 1):
            with self._lock:
                self.stats["requests"] += 1
            retry_after = None
            try:
                req = urllib.request.Request(url, data=data, headers=self._headers(), method="POST")
                with urllib.request.urlopen(req, timeout=c.timeout_s) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                text = e.read().decode("utf-8", "replace")[:2000]
                if e.code not in RETRYABLE_STATUS:
                    raise EndpointError(f"HTTP {e.code}: {text[:500]}", e.code, text) from None
                last = EndpointError(f"HTTP {e.code} after {attempt + 1} attempt(s): {text[:300]}", e.code, text)
                ra = e.headers.get("Retry-After") if e.headers else None
                try:
                    retry_after = float(ra) if ra else None
                except ValueError:
                    retry_after = None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                reason = getattr(e, "reason", e)
                kind = "timeout" if isinstance(reason, TimeoutError) or "timed out" in str(reason) else "connection error"
                last = EndpointError(f"{kind} after {attempt + 1} attempt(s): {reason}")
            except json.JSONDecodeError as e:
                raise EndpointError(f"the endpoint did not return JSON: {e}") from None
            if attempt == c.max_retries:
                raise last
            wait = min(c.backoff_max_s, delay) * random.uniform(0.75, 1.25)
            if retry_after is not None:
                wait = max(wait, min(retry_after, 600.0))  # the server knows best (bounded)
            with self._lock:
                self.stats["retries"] += 1
            time.sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")

    def label_token_ids(self) -> list[int]:
        """The label tokens' ids from the vLLM server's /tokenize (once; labels must be single tokens)."""
        with self._lock:
            if self._label_ids is not None:
                return self._label_ids
        root = re.sub(r"/v1/?$", "", self.config.base_url.rstrip("/"))
        ids = []
        for label in LABELS[:self.config.max_k]:
            reply = self._post(root + "/tokenize", {"model": self.config.model, "prompt": label,
                                                    "add_special_tokens": False})
            tokens = reply.get("tokens") or []
            if len(tokens) != 1:
                raise ValueError(f"option label {label!r} is not a single token for {self.config.model} ({tokens})")
            ids.append(int(tokens[0]))
        if len(set(ids)) != len(ids):
            raise ValueError(f"option labels map to repeated token ids {ids}")
        with self._lock:
            self._label_ids = ids
        return ids

    # ---- requests -------------------------------------------------------------------------------
    def _data_url(self, image) -> str:
        buf = io.BytesIO()
        if self.config.image_format == "JPEG":
            image.save(buf, "JPEG", quality=90)
            mime = "image/jpeg"
        else:
            image.save(buf, "PNG")
            mime = "image/png"
        return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")

    def messages(self, view: MatchView) -> list[dict[str, Any]]:
        """One user turn: persona + instruction, then "Image A:" + image, ..., then the question."""
        k = view.k
        images = self.view_images(view)
        prefix, lines, suffix = self.template.text_parts(view.persona_text, k)
        content: list[dict[str, Any]] = [{"type": "text", "text": prefix}]
        for line, image in zip(lines, images):
            content.append({"type": "text", "text": line})
            content.append({"type": "image_url", "image_url": {"url": self._data_url(image)}})
        content.append({"type": "text", "text": suffix})
        return [{"role": "user", "content": content}]

    def _body(self, messages: list[dict[str, Any]], k: int, mode: str, seed: int = 0) -> dict[str, Any]:
        c = self.config
        # log-probabilities do not depend on sampling; a strict answer is the greedy one, seeded
        # as well for endpoints whose "temperature 0" still samples
        body: dict[str, Any] = {"model": c.model, "messages": messages, "n": 1,
                                "temperature": 1.0 if mode == "logprobs" else 0.0}
        if mode != "logprobs":
            body["seed"] = int(seed)
        if mode == "logprobs":
            body.update(max_tokens=1, logprobs=True, top_logprobs=max(c.top_logprobs, k) if c.vllm_label_ids else c.top_logprobs)
            if c.vllm_label_ids:
                ids = self.label_token_ids()[:k]
                body.update(allowed_token_ids=ids, logprob_token_ids=ids, return_tokens_as_token_ids=True)
        else:
            body.update(max_tokens=c.max_answer_tokens)
            if c.structured_choice:
                body["structured_outputs"] = {"choice": list(LABELS[:k])}
            elif c.vllm_label_ids:
                body.update(allowed_token_ids=self.label_token_ids()[:k], max_tokens=1)
        body.update(c.extra_body)
        return body

    # ---- replies --------------------------------------------------------------------------------
    def _scores_from_logprobs(self, reply: dict[str, Any], k: int) -> Judgement | None:
        """A judgement from the first token's log-probabilities; None when the reply has none."""
        try:
            choice = reply["choices"][0]
            content = (choice.get("logprobs") or {}).get("content") or []
        except (KeyError, IndexError, TypeError):
            return None
        if not content or not content[0].get("top_logprobs"):
            return None
        first = content[0]
        entries = list(first["top_logprobs"]) + [{"token": first.get("token"), "logprob": first.get("logprob")}]
        if self.config.vllm_label_ids:
            keys = [f"token_id:{t}" for t in self.label_token_ids()[:k]]
            match = lambda tok: tok  # noqa: E731  (tokens come back as "token_id:<id>")
        else:
            keys = list(LABELS[:k])
            # the bare label token only, as the in-process judge and the vLLM path score it; " A"
            # is another token (another continuation), not a second spelling to add in
            match = lambda tok: tok  # noqa: E731
        found: dict[str, list[float]] = {}
        floor = math.inf
        for e in entries:
            tok, lp = e.get("token"), e.get("logprob")
            if tok is None or lp is None or not math.isfinite(lp):
                continue
            floor = min(floor, lp)
            key = match(tok)
            if key in keys:
                found.setdefault(key, []).append(lp)
        if not found:
            return Judgement.failed(f"none of the {k} labels among the endpoint's top log-probabilities")
        # the sampled token is listed twice (as itself and in top_logprobs): one value per label
        logp = np.array([found[key][0] if key in found else floor for key in keys], dtype=np.float64)
        missing = sum(key not in found for key in keys)
        extras = {"labels_missing": float(missing),
                  "label_mass": float(sum(math.exp(found[key][0]) for key in found))}
        usage = reply.get("usage") or {}
        if usage.get("prompt_tokens") is not None:
            extras["prompt_tokens"] = float(usage["prompt_tokens"])
        if missing:
            with self._lock:
                self.stats["labels_missing"] += missing
        return Judgement(scores=softmax(logp, self.config.label_temperature), extras=extras)

    def _scores_from_answer(self, reply: dict[str, Any], k: int) -> Judgement:
        try:
            text = reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            text = ""
        answer = text.strip()
        if answer.endswith("."):
            answer = answer[:-1].rstrip()
        labels = LABELS[:k]
        if len(answer) == 1 and answer in labels:
            scores = np.zeros(k, dtype=np.float32)
            scores[labels.index(answer)] = 1.0
            return Judgement(scores=scores, extras={"one_hot": 1.0})
        with self._lock:
            self.stats["rejected_answers"] += 1
        return Judgement.failed(f"rejected answer {text[:40]!r}: not exactly one of {', '.join(labels)}")

    def _judge_one(self, view: MatchView) -> Judgement:
        try:
            messages = self.messages(view)
        except ViewError as e:
            return Judgement.failed(str(e))
        except Exception as e:  # noqa: BLE001
            return Judgement.failed(f"could not build the request: {type(e).__name__}: {e}")
        url = self._url("/chat/completions")
        k = view.k
        try:
            if self._mode == "logprobs":
                try:
                    reply = self._post(url, self._body(messages, k, "logprobs", view.seed))
                except EndpointError as e:
                    if self.config.mode == "auto" and _logprobs_refused(e):
                        self._switch_to_answer(f"the endpoint refused log-probabilities ({e})")
                    else:
                        raise
                else:
                    judgement = self._scores_from_logprobs(reply, k)
                    if judgement is not None:
                        return judgement
                    if self.config.mode != "auto":
                        return Judgement.failed("the endpoint returned no log-probabilities")
                    self._switch_to_answer("the endpoint replied without log-probabilities")
            reply = self._post(url, self._body(messages, k, "answer", view.seed))
            return self._scores_from_answer(reply, k)
        except EndpointError as e:
            return Judgement.failed(f"endpoint: {e}")
        except ValueError as e:  # label ids that are not single tokens
            return Judgement.failed(f"endpoint: {e}")

    def _switch_to_answer(self, why: str) -> None:
        with self._lock:
            if self._mode != "answer":
                log.warning("API judge %s: %s; using strict single-label answers from now on", self.config.model, why)
                self._mode = "answer"

    def judge(self, views: list[MatchView]) -> list[Judgement]:
        out = list(self._pool.map(self._judge_one, views))
        failed = sum(j.scores is None for j in out)
        if failed:
            with self._lock:
                self.stats["failed_views"] += failed
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
