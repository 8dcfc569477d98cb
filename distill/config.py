"""Job configs: a pydantic model, filled from a YAML file and then ``dotted.key=value`` overrides.

Every job in ``jobs/`` is ``run_job(MyJobConfig, library_call)``: the one place that parses the
command line, lists the config fields under ``--help`` and turns user errors (a bad config value,
``distill.errors.UserError``) into one line on stderr and exit code 2, while bugs keep their
traceback. The same model renders the config reference (``config_reference``), so docs cannot
drift from code.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
USER_ERROR_EXIT = 2


class ConfigError(SystemExit):
    """A config that cannot be used; exits with a readable message instead of a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(f"config error: {message}")


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: what went wrong and where (line, column), no source excerpt."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(err, 'problem', None) or type(err).__name__}{where}"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["a.b=3", "c=[1, 2]"]`` -> ``{"a": {"b": 3}, "c": [1, 2]}`` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(err)})") from None
        _set_dotted(tree, key.strip(), value)
    return tree


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, recursively for mappings on both sides (the one merge of config trees)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _accepts(annotation: Any, kind: type) -> bool:
    return annotation is kind or any(_accepts(a, kind) for a in typing.get_args(annotation))


def _empty_means_none(model: type[BaseModel], tree: dict[str, Any]) -> dict[str, Any]:
    """``key=`` on the command line is "empty": None for optional fields that take no string
    (``max_items=`` -> all items, as the reference says), the empty string for string fields."""
    out = dict(tree)
    for key, value in tree.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        if value == "" and _accepts(field.annotation, type(None)) and not _accepts(field.annotation, str):
            out[key] = None
        elif isinstance(value, dict):
            sub = _submodels(field.annotation)
            if len(sub) == 1:
                out[key] = _empty_means_none(sub[0], value)
    return out


def _keep_default_kind(model: type[BaseModel], tree: dict[str, Any]) -> dict[str, Any]:
    """``judge.temperature=0.5`` tunes the default judge: a tagged-union field given without its tag
    (``kind``) keeps the tag of the field's default, instead of failing to pick a union member."""
    out = dict(tree)
    for key, value in tree.items():
        field = model.model_fields.get(key)
        if field is None or not isinstance(value, dict):
            continue
        tag = field.discriminator if isinstance(field.discriminator, str) else None
        if tag and tag not in value:
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel) and hasattr(default, tag):
                out[key] = {tag: getattr(default, tag), **value}
        sub = _submodels(field.annotation)
        if len(sub) == 1:
            out[key] = _keep_default_kind(sub[0], out[key])
    return out


def build_config(model: type[M], yaml_text: str | None = None, overrides: list[str] | None = None) -> M:
    """Validate YAML + overrides into ``model``; errors name the offending field."""
    data: dict[str, Any] = {}
    if yaml_text:
        try:
            loaded = yaml.safe_load(yaml_text)
        except yaml.YAMLError as err:
            raise ConfigError(f"the config file is not valid YAML ({_yaml_problem(err)})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError("the YAML file must hold a mapping at top level")
        data = loaded or {}
    data = _keep_default_kind(model, deep_merge(data, _empty_means_none(model, parse_overrides(overrides or []))))
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"{model.__name__} is invalid: " + "; ".join(problems)) from None


def load_config(model: type[M], argv: list[str] | None = None, description: str | None = None) -> M:
    """Parse ``--config FILE`` and ``key=value`` overrides from the command line."""
    parser = argparse.ArgumentParser(description=description or model.__doc__, epilog=config_help(model),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file with the job config (any pyarrow filesystem URI)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. tournament.k=4")
    # intermixed: overrides may come before and after --config (``a=1 --config x.yaml b=2``)
    args = parser.parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    text = None
    if args.config:
        from distill import storage

        if not storage.exists(args.config):
            raise ConfigError(f"config file {args.config!r} does not exist")
        try:
            text = storage.read_bytes(args.config).decode()
        except UnicodeDecodeError:
            raise ConfigError(f"config file {args.config!r} is not UTF-8 text") from None
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {args.config!r} is not valid YAML ({_yaml_problem(err)})") from None
    cfg = build_config(model, text, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        raise SystemExit(0)
    prepare_models(cfg)
    return cfg


def prepare_models(cfg: BaseModel) -> None:
    """Offline only when the user says so or every model is local (``distill.hub``); a model that
    offline mode cannot reach raises ``hub.ModelUnavailable``, a ``UserError`` naming its setting
    (``run_job`` prints it as one line, exit code 2)."""
    from distill.hub import prepare

    prepare(cfg)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _submodels(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _submodels(a)]


def reference_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted field, type, default, description) for every field, nested models flattened.

    Defaults are read from a default instance where the model builds without arguments, so a
    section filled by a factory or a validator (the ``pad`` preset, the demo's captions) shows the
    values a run really gets, not its model class's own defaults."""
    rows: list[tuple[str, str, str, str]] = []

    def walk(m: type[BaseModel], pre: str, inst: BaseModel | None) -> None:
        for name, field in m.model_fields.items():
            key = f"{pre}{name}"
            subs = _submodels(field.annotation)
            if inst is not None:
                value, has_value = getattr(inst, name), True
            elif field.is_required():
                value, has_value = None, False
            else:
                value, has_value = field.get_default(call_default_factory=True), True
            if len(subs) == 1 and typing.get_origin(field.annotation) is None:
                walk(subs[0], key + ".", value if isinstance(value, subs[0]) else None)
                continue
            default = repr(value) if has_value else "required"
            if subs:  # a union of models (e.g. judge kinds): show each variant's fields
                default = "see variants"
            rows.append((key, _type_name(field.annotation), default, (field.description or "").replace("\n", " ")))
            for sub in subs:
                walk(sub, f"{key}[{sub.__name__}].", value if isinstance(value, sub) else None)

    try:
        default = model()
    except ValidationError:  # required fields: fall back to each field's own default
        default = None
    walk(model, prefix, default)
    return rows


def config_reference(model: type[BaseModel], prefix: str = "") -> str:
    """A Markdown table of every field (see ``reference_rows``)."""
    rows = [f"| `{key}` | {kind.replace('|', chr(92) + '|')} | `{default}` | {doc.replace('|', chr(92) + '|')} |"
            for key, kind, default, doc in reference_rows(model, prefix)]
    return "| field | type | default | meaning |\n|---|---|---|---|\n" + "\n".join(rows)


def config_help(model: type[BaseModel]) -> str:
    """The ``--help`` epilog: every config field (dotted), its type, default and description,
    from the same rows as ``config_reference``, so ``--help`` and docs/config.md agree."""
    lines = ["config fields (set as key=value or in the --config YAML):"]
    for key, kind, default, doc in reference_rows(model):
        lines.append(f"  {key} ({kind}; default {default})")
        if doc:
            lines.append(f"      {doc}")
    return "\n".join(lines)


def run_job(model: type[M], body: Callable[[M], T], argv: list[str] | None = None, name: str | None = None) -> T:
    """Parse ``model`` from the command line and run ``body`` on it: the entry of every job.

    A ``ConfigError`` or ``distill.errors.UserError`` (bad value, missing root, empty split, an
    output holding another run) becomes one line ``<job> failed: <message>`` on stderr and exit
    code 2, so scripts and ``ray job submit`` see a user error as such; any other exception is a
    bug and propagates with its traceback."""
    from distill.errors import UserError

    job = name or Path(sys.argv[0]).stem or "job"
    try:
        return body(load_config(model, argv))
    except ConfigError as err:
        message = str(err.code)
    except UserError as err:
        message = str(err)
    print(f"{job} failed: {message}", file=sys.stderr, flush=True)
    raise SystemExit(USER_ERROR_EXIT)
