"""Check the KubeRay manifests offline, as strictly as a cluster would, before ``kubectl apply``.

    python cluster/validate.py                      # every manifest in cluster/
    python cluster/validate.py my-cluster.yaml      # any RayCluster / RayJob / RayService file
    KUBERAY_CRDS=/path/to/crds python cluster/validate.py

Three layers, each the one a real cluster applies:

1. **The CRD schema.** Each resource is validated against the ``openAPIV3Schema`` of its
   ``apiVersion`` in the KubeRay CRDs (``../shared/kuberay-crds`` beside the repo, or
   ``$KUBERAY_CRDS``), made strict the way ``kubectl apply --validate=strict`` is: every object
   schema that lists ``properties`` rejects any other key (``additionalProperties: false``)
   unless it says ``x-kubernetes-preserve-unknown-fields``; ``metadata`` is checked as an
   ObjectMeta (name, labels, annotations); ``int32``/``int64`` ranges, quantity patterns,
   enums and required fields are enforced; ``x-kubernetes-list-type`` map/set lists must have
   unique keys; and the CEL rules (``x-kubernetes-validations``) these CRDs carry are evaluated
   (an unknown rule fails, so a CRD upgrade cannot silently skip one).
2. **KubeRay's admission rules** (``ray-operator/controllers/ray/utils/validation.go``, v1.7):
   name length and DNS-1035 form, ``resources``/``labels`` vs ``rayStartParams`` conflicts,
   replica bounds, autoscaler-v2 rules (restart policy, idle timeouts, priorities),
   RayJob cluster source and deletion settings, RayService upgrade strategies.
3. **What Ray's autoscaler derives** from the cluster spec
   (``ray.autoscaler._private.kuberay.autoscaling_config``, the code the autoscaler sidecar
   runs): each group's Ray resources and labels, which ``placements`` matches a stage's
   resource request against.

Nothing here talks to a cluster. ``tests/test_cluster.py`` runs it over every manifest and adds
the repository checks (entrypoints, job configs, serve config, GPU placement).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

REPO = Path(__file__).resolve().parents[1]
RAY_GROUP = "ray.io"
KINDS = ("RayCluster", "RayJob", "RayService")
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
             "RayService": "ray.io_rayservices.yaml"}

# KubeRay constants (ray-operator/controllers/ray/utils/constant.go)
MAX_RAYCLUSTER_NAME = 53
MAX_NAME = {"RayCluster": MAX_RAYCLUSTER_NAME, "RayJob": MAX_RAYCLUSTER_NAME - 6,
            "RayService": MAX_RAYCLUSTER_NAME - 6}
RAY_ENABLE_AUTOSCALER_V2 = "RAY_enable_autoscaler_v2"

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class CRDsMissing(FileNotFoundError):
    """The CRD folder is not there (a user's machine without ``../shared``)."""


def crd_dir() -> Path:
    """``$KUBERAY_CRDS``, else ``<repo>/../shared/kuberay-crds``."""
    return Path(os.environ.get("KUBERAY_CRDS") or REPO.parent / "shared" / "kuberay-crds")


# --------------------------------------------------------------------------------------------
# 1. the CRD schemas, made strict
# --------------------------------------------------------------------------------------------

#: ObjectMeta fields a manifest may set (the CRDs only say ``metadata: {type: object}``).
OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
    },
}


def strict(schema: Any) -> Any:
    """A copy of an openAPIV3Schema in which objects with listed properties reject other keys."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def load_schemas(directory: str | Path | None = None) -> dict[tuple[str, str], dict]:
    """``{(apiVersion, kind): strict schema}`` for every served version of the three CRDs."""
    folder = Path(directory) if directory else crd_dir()
    if not folder.is_dir():
        raise CRDsMissing(f"KubeRay CRDs not found at {folder} (set KUBERAY_CRDS or put them in ../shared/kuberay-crds)")
    return _load_schemas(str(folder.resolve()))


@functools.lru_cache(maxsize=4)
def _load_schemas(folder: str) -> dict[tuple[str, str], dict]:
    # The CRDs are 3 MB of YAML (seconds to parse); the strict schemas are cached as JSON
    # under <repo>/.cache, keyed by the CRD files' content.
    texts = {kind: (Path(folder) / name).read_bytes() for kind, name in CRD_FILES.items()}
    digest = hashlib.sha256(b"".join(texts.values()) + Path(__file__).read_bytes()).hexdigest()[:16]
    cache = REPO / ".cache" / f"kuberay-schemas-{digest}.json"
    if cache.exists():
        try:
            return {tuple(k.split(" ", 1)): v for k, v in json.loads(cache.read_text()).items()}
        except (OSError, ValueError):
            pass
    schemas: dict[tuple[str, str], dict] = {}
    for kind, text in texts.items():
        crd = yaml.load(text, Loader=_LOADER)
        assert crd["spec"]["names"]["kind"] == kind, f"{CRD_FILES[kind]} defines {crd['spec']['names']['kind']}, not {kind}"
        for version in crd["spec"]["versions"]:
            if not version.get("served", False):
                continue
            schema = strict(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = OBJECT_META
            schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
            schemas[(f"{crd['spec']['group']}/{version['name']}", kind)] = schema
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({f"{a} {k}": v for (a, k), v in schemas.items()}))
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only checkout still validates, just slower
    return schemas


# CEL rules in the v1.7 CRDs, as Python. ``oldSelf`` rules (immutability) hold on create.
def _has(obj: Any, key: str) -> bool:
    return isinstance(obj, dict) and key in obj


CEL_RULES: dict[str, Any] = {
    "self == oldSelf": lambda s: True,
    "self in ['ray.io/kuberay-operator', 'kueue.x-k8s.io/multikueue']":
        lambda s: s in ("ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"),
    "!((has(self.onSuccess) || has(self.onFailure)) && has(self.deletionRules))":
        lambda s: not ((_has(s, "onSuccess") or _has(s, "onFailure")) and _has(s, "deletionRules")),
    "((has(self.onSuccess) && has(self.onFailure)) || has(self.deletionRules))":
        lambda s: (_has(s, "onSuccess") and _has(s, "onFailure")) or _has(s, "deletionRules"),
    "!(has(self.jobStatus) && has(self.jobDeploymentStatus))":
        lambda s: not (_has(s, "jobStatus") and _has(s, "jobDeploymentStatus")),
    "has(self.jobStatus) || has(self.jobDeploymentStatus)":
        lambda s: _has(s, "jobStatus") or _has(s, "jobDeploymentStatus"),
}


def _validator_class():
    import jsonschema
    from jsonschema import Draft7Validator, ValidationError

    def cel(validator, rules, instance, schema):
        for rule in rules:
            check = CEL_RULES.get(rule["rule"])
            if check is None:
                yield ValidationError(f"CEL rule not supported by cluster/validate.py: {rule['rule']!r}")
            elif not check(instance):
                yield ValidationError(rule.get("message") or f"failed CEL rule {rule['rule']!r}")

    def list_type(validator, kind, instance, schema):
        if not isinstance(instance, list):
            return
        if kind == "set":
            seen = [json.dumps(i, sort_keys=True) for i in instance]
            if len(seen) != len(set(seen)):
                yield ValidationError("duplicate items in a list of type 'set'")
        elif kind == "map":
            keys = schema.get("x-kubernetes-list-map-keys", [])
            item_props = schema.get("items", {}).get("properties", {})
            seen_keys = set()
            for item in instance:
                if not isinstance(item, dict):
                    continue
                key = tuple(item.get(k, item_props.get(k, {}).get("default")) for k in keys)
                if key in seen_keys:
                    yield ValidationError(f"duplicate entry for key {dict(zip(keys, key))} in a list of type 'map'")
                seen_keys.add(key)

    formats = jsonschema.FormatChecker()

    @formats.checks("int32")
    def _int32(value: Any) -> bool:
        return not isinstance(value, int) or -(2 ** 31) <= value < 2 ** 31

    @formats.checks("int64")
    def _int64(value: Any) -> bool:
        return not isinstance(value, int) or -(2 ** 63) <= value < 2 ** 63

    cls = jsonschema.validators.extend(Draft7Validator, {"x-kubernetes-validations": cel,
                                                          "x-kubernetes-list-type": list_type})
    return cls, formats


def schema_errors(doc: dict, directory: str | None = None) -> list[str]:
    """CRD-schema violations of one resource, each as ``path: message``."""
    api, kind = doc.get("apiVersion"), doc.get("kind")
    schemas = load_schemas(directory)
    if (api, kind) not in schemas:
        known = sorted(f"{a} {k}" for a, k in schemas)
        return [f"<root>: no served CRD version for apiVersion={api!r} kind={kind!r} (known: {known})"]
    cls, formats = _validator_class()
    validator = cls(schemas[(api, kind)], format_checker=formats)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


# --------------------------------------------------------------------------------------------
# 2. KubeRay's admission rules (validation.go, v1.7), for the fields these manifests use
# --------------------------------------------------------------------------------------------

def _env(container: dict) -> dict[str, Any]:
    return {e.get("name"): e.get("value") for e in container.get("env", []) or []}


def _label_key_errors(key: str) -> list[str]:
    prefix, _, name = key.rpartition("/")
    errs = []
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        errs.append(f"label key {key!r}: prefix must be a DNS-1123 subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        errs.append(f"label key {key!r}: name part must be <= 63 alphanumerics, '-', '_' or '.'")
    return errs


def _label_value_errors(key: str, value: Any) -> list[str]:
    if not isinstance(value, str) or len(value) > 63 or (value and not _LABEL_NAME.match(value)):
        return [f"label {key!r}: value {value!r} is not a valid label value"]
    return []


def autoscaling_v2(spec: dict) -> bool:
    opts = spec.get("autoscalerOptions") or {}
    if not spec.get("enableInTreeAutoscaling"):
        return False
    if opts.get("version") == "v2":
        return True
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    return str(_env(head).get(RAY_ENABLE_AUTOSCALER_V2, "")).lower() in ("1", "true")


_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[numkMGTPE]i?|Ki)?$")
_SUFFIX = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "E": 1e18, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}


def quantity(value: Any) -> float:
    """A Kubernetes quantity ("500m", "32Gi", 4) as a number."""
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = match.group(1), match.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return float(number + suffix)
    return float(number) * _SUFFIX[suffix]


def pod_errors(pod: dict, at: str) -> list[str]:
    """The API server's pod checks that the CRD schema cannot express, for the fields used here."""
    errs: list[str] = []
    volumes = {v.get("name") for v in pod.get("volumes", []) or []}
    containers = list(pod.get("containers", []) or []) + list(pod.get("initContainers", []) or [])
    names = [c.get("name") for c in containers]
    if len(names) != len(set(names)):
        errs.append(f"{at}: duplicate container names {names}")
    for c in containers:
        cat = f"{at}.containers[{c.get('name')}]"
        if not _DNS1123_LABEL.match(str(c.get("name", ""))):
            errs.append(f"{cat}: container name must be a DNS-1123 label")
        if c.get("imagePullPolicy") not in (None, "Always", "IfNotPresent", "Never"):
            errs.append(f"{cat}.imagePullPolicy: {c['imagePullPolicy']!r} is not Always, IfNotPresent or Never")
        for m in c.get("volumeMounts", []) or []:
            if m.get("name") not in volumes:
                errs.append(f"{cat}.volumeMounts: {m.get('name')!r} is not a volume of the pod")
        res = c.get("resources") or {}
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        for key in set(requests) & set(limits):
            if quantity(requests[key]) > quantity(limits[key]):
                errs.append(f"{cat}.resources: request {key}={requests[key]} exceeds its limit {limits[key]}")
        for key in set(requests) | set(limits):
            if "/" in key and not key.startswith(("kubernetes.io/", "requests.")) and key in requests and key in limits \
                    and quantity(requests[key]) != quantity(limits[key]):
                errs.append(f"{cat}.resources: extended resource {key} must have request == limit")
    return errs


def cluster_spec_errors(spec: dict, where: str = "spec") -> list[str]:
    """KubeRay's ``ValidateRayClusterSpec`` for a RayCluster spec (or an embedded one)."""
    errs: list[str] = []
    head = spec.get("headGroupSpec", {})
    groups = [("Head", head)] + [(w.get("groupName", "?"), w) for w in spec.get("workerGroupSpecs", []) or []]
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    v2 = autoscaling_v2(spec) if head.get("template", {}).get("spec", {}).get("containers") else False
    names = [w.get("groupName") for w in spec.get("workerGroupSpecs", []) or []]
    if len(names) != len(set(names)):
        errs.append(f"{where}.workerGroupSpecs: duplicate groupName in {names}")
    for name, group in groups:
        at = f"{where}.{'headGroupSpec' if name == 'Head' else 'workerGroupSpecs[' + name + ']'}"
        containers = group.get("template", {}).get("spec", {}).get("containers") or []
        if not containers:
            errs.append(f"{at}: the pod template needs at least one container")
            continue
        errs += pod_errors(group["template"]["spec"], f"{at}.template.spec")
        params = group.get("rayStartParams") or {}
        if group.get("resources") and any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")):
            errs.append(f"{at}: resources set both in rayStartParams and in the top-level resources field")
        if "labels" in params:
            errs.append(f"{at}: rayStartParams['labels'] is not supported; use the top-level labels field")
        for key, value in (group.get("labels") or {}).items():
            errs += [f"{at}.labels: {e}" for e in _label_key_errors(key) + _label_value_errors(key, value)]
        restart = group["template"]["spec"].get("restartPolicy")
        if v2 and restart not in (None, "", "Never"):
            errs.append(f"{at}: restartPolicy must be Never or unset with autoscaler v2")
        if name == "Head":
            continue
        lo, hi = group.get("minReplicas"), group.get("maxReplicas")
        if not autoscaling and (lo is None or hi is None):
            errs.append(f"{at}: minReplicas and maxReplicas are required when autoscaling is disabled")
        if lo is not None and hi is not None and lo > hi:
            errs.append(f"{at}: minReplicas {lo} > maxReplicas {hi}")
        if group.get("idleTimeoutSeconds") is not None and not v2:
            errs.append(f"{at}: idleTimeoutSeconds needs autoscaler v2 (autoscalerOptions.version: v2)")
        if group.get("priority") and not v2:
            errs.append(f"{at}: priority needs autoscaler v2")
        if group.get("priority") and _version(spec.get("rayVersion", "0")) < (2, 56):
            errs.append(f"{at}: priority needs rayVersion >= 2.56.0")
        if group.get("suspend") and autoscaling:
            errs.append(f"{at}: a worker group cannot be suspended with the autoscaler enabled")
    if head.get("template", {}).get("spec", {}).get("containers"):
        head_env = _env(head["template"]["spec"]["containers"][0])
        if not autoscaling and str(head_env.get(RAY_ENABLE_AUTOSCALER_V2, "")).lower() in ("1", "true"):
            errs.append(f"{where}: {RAY_ENABLE_AUTOSCALER_V2} is set but enableInTreeAutoscaling is false")
        if autoscaling and (spec.get("autoscalerOptions") or {}).get("version") and RAY_ENABLE_AUTOSCALER_V2 in head_env:
            errs.append(f"{where}: both autoscalerOptions.version and the head env var {RAY_ENABLE_AUTOSCALER_V2} are set; use only the former")
    auth = spec.get("authOptions") or {}
    if auth.get("mode", "token" if auth else None) == "token" and _version(spec.get("rayVersion", "0")) < (2, 52):
        errs.append(f"{where}.authOptions: token mode needs rayVersion >= 2.52.0")
    return errs


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", str(text))[:3])


def admission_errors(doc: dict) -> list[str]:
    """KubeRay's validation webhook / reconciler checks for one resource."""
    kind, meta, spec = doc.get("kind"), doc.get("metadata") or {}, doc.get("spec") or {}
    errs: list[str] = []
    name = meta.get("name", "")
    if kind in MAX_NAME and len(name) > MAX_NAME[kind]:
        errs.append(f"metadata.name: {kind} names are at most {MAX_NAME[kind]} characters")
    if not _DNS1035.match(name or "-"):
        errs.append(f"metadata.name: {name!r} is not a DNS-1035 label")
    if kind == "RayCluster":
        errs += cluster_spec_errors(spec)
    elif kind == "RayJob":
        selector = spec.get("clusterSelector") or {}
        if not spec.get("rayClusterSpec") and not selector:
            errs.append("spec: one of rayClusterSpec or clusterSelector must be set")
        if selector and not selector.get("ray.io/cluster"):
            errs.append("spec.clusterSelector: needs the ray.io/cluster key")
        if selector and spec.get("backoffLimit", 0) > 0:
            errs.append("spec.backoffLimit: incompatible with clusterSelector")
        if not spec.get("shutdownAfterJobFinishes") and spec.get("ttlSecondsAfterFinished", 0) > 0:
            errs.append("spec.ttlSecondsAfterFinished: needs shutdownAfterJobFinishes")
        if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
            errs.append("spec.suspend: needs shutdownAfterJobFinishes")
        for key in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
            if key in spec and spec[key] <= 0:
                errs.append(f"spec.{key}: must be positive")
        if "runtimeEnvYAML" in spec:
            try:
                env = yaml.safe_load(spec["runtimeEnvYAML"])
                if env is not None and not isinstance(env, dict):
                    errs.append("spec.runtimeEnvYAML: must be a YAML mapping")
            except yaml.YAMLError as err:
                errs.append(f"spec.runtimeEnvYAML: not YAML: {err}")
        if spec.get("rayClusterSpec"):
            errs += cluster_spec_errors(spec["rayClusterSpec"], "spec.rayClusterSpec")
    elif kind == "RayService":
        cluster = spec.get("rayClusterConfig") or {}
        errs += cluster_spec_errors(cluster, "spec.rayClusterConfig")
        if (cluster.get("headGroupSpec", {}).get("headService") or {}).get("metadata", {}).get("name"):
            errs.append("spec.rayClusterConfig.headGroupSpec.headService.metadata.name must not be set")
        upgrade = spec.get("upgradeStrategy") or {}
        kinds = ("NewClusterWithIncrementalUpgrade", "NewCluster", "None")
        if "type" in upgrade and upgrade["type"] not in kinds:
            errs.append(f"spec.upgradeStrategy.type: {upgrade['type']!r} is not one of {kinds}")
        if upgrade.get("type") == "NewClusterWithIncrementalUpgrade":
            opts = upgrade.get("clusterUpgradeOptions") or {}
            if not cluster.get("enableInTreeAutoscaling"):
                errs.append("spec.upgradeStrategy: NewClusterWithIncrementalUpgrade needs the autoscaler")
            if not opts.get("gatewayClassName"):
                errs.append("spec.upgradeStrategy.clusterUpgradeOptions.gatewayClassName is required")
            step, surge = opts.get("stepSizePercent"), opts.get("maxSurgePercent", 100)
            if step is None or not 0 <= step <= 100 or not 0 <= surge <= 100 or step > surge:
                errs.append("spec.upgradeStrategy.clusterUpgradeOptions: need 0 <= stepSizePercent <= maxSurgePercent <= 100")
            if not opts.get("intervalSeconds", 0) > 0:
                errs.append("spec.upgradeStrategy.clusterUpgradeOptions.intervalSeconds must be > 0")
        if spec.get("rayClusterDeletionDelaySeconds", 0) < 0:
            errs.append("spec.rayClusterDeletionDelaySeconds must be >= 0")
        if "serveConfigV2" in spec:
            try:
                if not isinstance(yaml.safe_load(spec["serveConfigV2"]), dict):
                    errs.append("spec.serveConfigV2: must be a YAML mapping")
            except yaml.YAMLError as err:
                errs.append(f"spec.serveConfigV2: not YAML: {err}")
    return errs


# --------------------------------------------------------------------------------------------
# 3. what Ray's autoscaler makes of a cluster spec, and where a resource request can land
# --------------------------------------------------------------------------------------------

def cluster_spec_of(doc: dict) -> dict | None:
    """The RayCluster spec a resource runs on (embedded for RayJob/RayService), if it has one."""
    spec = doc.get("spec") or {}
    return {"RayCluster": spec, "RayJob": spec.get("rayClusterSpec"),
            "RayService": spec.get("rayClusterConfig")}.get(doc.get("kind"))


def node_types(cluster_spec: dict) -> dict[str, dict]:
    """``{group: {"resources", "labels", "min_workers", "max_workers", ...}}`` as Ray's KubeRay
    autoscaler derives them (the head is ``headgroup``)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    cr = {"metadata": {"name": "validate", "namespace": "default"}, "spec": copy.deepcopy(cluster_spec)}
    return _derive_autoscaling_config_from_ray_cr(cr)["available_node_types"]


def demand(num_cpus: float = 0, num_gpus: float = 0, accelerator_type: str | None = None,
           resources: dict[str, float] | None = None) -> dict[str, float]:
    """A Ray resource request, spelled the way Ray schedules it (``resources_from_ray_options``)."""
    from ray._common.utils import resources_from_ray_options

    opts: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus, "resources": dict(resources or {})}
    if accelerator_type:
        opts["accelerator_type"] = accelerator_type
    return {k: v for k, v in resources_from_ray_options(opts).items() if v}


def placements(request: dict[str, float], types: dict[str, dict]) -> list[str]:
    """Groups whose pods (as the autoscaler sees them) can each host ``request``; max_workers > 0
    for workers (the head counts as it is)."""
    out = []
    for name, node in types.items():
        if name != "headgroup" and node.get("max_workers", 0) <= 0:
            continue
        have = node.get("resources", {})
        if all(have.get(k, 0) >= v for k, v in request.items()):
            out.append(name)
    return out


def stage_requests(config: Any, path: str = "") -> list[tuple[str, dict[str, float], int, int]]:
    """The Ray resource requests a job config makes, found by shape anywhere in the config tree:
    ``(where, request, fewest, most)`` per actor pool or trainer.

    * an actor pool or task group (``JudgePoolConfig``, ``EmbedConfig``, ``IndexBuildConfig``, ...):
      a mapping with ``num_gpus``, plus ``num_cpus``, ``accelerator_type``, a ``resources`` mapping
      of custom Ray resources and ``min_actors``/``max_actors`` when present;
    * a Ray Train scaling config: a mapping with ``use_gpu`` (or ``num_workers`` with
      ``resources_per_worker``), plus ``cpus_per_worker``/``gpus_per_worker``,
      ``resources_per_worker`` and ``accelerator_type`` (one GPU per worker when ``use_gpu``).
    """
    found: list[tuple[str, dict[str, float], int, int]] = []
    if isinstance(config, dict):
        if "num_gpus" in config and not isinstance(config["num_gpus"], dict):
            extra = config.get("resources")
            req = demand(float(config.get("num_cpus", 1) or 0), float(config.get("num_gpus") or 0),
                         config.get("accelerator_type"), extra if isinstance(extra, dict) else None)
            lo = int(config.get("min_actors", config.get("min_replicas", 1)) or 1)
            hi = int(config.get("max_actors", config.get("max_replicas", lo)) or lo)
            found.append((path or "<root>", req, lo, max(lo, hi)))
        elif "use_gpu" in config or ("num_workers" in config and "resources_per_worker" in config):
            per = dict(config.get("resources_per_worker") or {})
            gpus = float(per.pop("GPU", config.get("gpus_per_worker", 1) if config.get("use_gpu") else 0))
            cpus = float(per.pop("CPU", config.get("cpus_per_worker", 1)))
            n = int(config.get("num_workers", 1) or 1)
            found.append((path or "<root>", demand(cpus, gpus, config.get("accelerator_type"), per), n, n))
        for key, value in config.items():
            found += stage_requests(value, f"{path}.{key}" if path else str(key))
    elif isinstance(config, list):
        for i, value in enumerate(config):
            found += stage_requests(value, f"{path}[{i}]")
    return found


def capacity(request: dict[str, float], node: dict) -> int:
    """How many copies of ``request`` the whole group can host (per pod x max_workers)."""
    have = node.get("resources", {})
    per_pod = min((int(have.get(k, 0) // v) for k, v in request.items() if v > 0), default=0)
    return per_pod * int(node.get("max_workers", 0))


# --------------------------------------------------------------------------------------------

def load_documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifest_paths() -> list[Path]:
    return sorted(p for p in (REPO / "cluster").glob("*.yaml"))


def ray_documents(paths: Iterable[Path]) -> Iterator[tuple[Path, dict]]:
    for path in paths:
        for doc in load_documents(path):
            if str(doc.get("apiVersion", "")).startswith(RAY_GROUP + "/"):
                yield path, doc


def validate(doc: dict, directory: str | None = None) -> list[str]:
    """Schema + admission errors of one KubeRay resource (empty = valid)."""
    return schema_errors(doc, directory) + admission_errors(doc)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = [Path(a) for a in args] or manifest_paths()
    try:
        load_schemas()
    except CRDsMissing as err:
        print(err, file=sys.stderr)
        return 2
    bad = 0
    for path, doc in ray_documents(paths):
        errors = validate(doc)
        label = f"{path}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        if errors:
            bad += 1
            print(f"FAIL {label}")
            for e in errors:
                print(f"    {e}")
        else:
            groups = node_types(cluster_spec_of(doc)) if cluster_spec_of(doc) else {}
            print(f"ok   {label}" + "".join(f"\n    {g}: {n['resources']}" for g, n in groups.items()))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
