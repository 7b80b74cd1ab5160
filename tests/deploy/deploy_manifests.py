"""Loading the deployment files for the tests in this folder: kustomize overlays rendered
with ``kubectl kustomize``, compose files with compose's variable interpolation, the
AscendJob template filled with sample values, Dockerfiles' ``FROM`` lines resolved through
their ``ARG`` defaults, and the CRD schemas kept in ``schemas/``.

Everything is discovered by name (``k8s/overlays/*``, ``docker-compose*.yml``,
``docker/*.Dockerfile``), so a new overlay or compose file is checked without editing the
tests. Resources are named ``Kind/name`` in every message.
"""
from __future__ import annotations

import copy
import json
import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import needs
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
K8S = REPO_ROOT / "k8s"
ASCENDJOB_TEMPLATE = REPO_ROOT / "trainer" / "ascendjob.yaml"

# The Kubernetes version whose schemas (bundled by kubernetes-validate) the manifests must
# meet: the oldest minor still widely served, so nothing newer slips in unnoticed.
KUBERNETES_VERSION = "1.30"

# Custom resources validated against the CRDs in schemas/, by API group and kind.
CRD_FILES = {
    ("keda.sh", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("keda.sh", "TriggerAuthentication"): "keda.sh_triggerauthentications.yaml",
    ("mindxdl.gitee.com", "AscendJob"): "ascendjobs.mindxdl.gitee.com.yaml",
}
CRD_GROUPS = {group for group, _ in CRD_FILES}

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Keys that name a secret. A key that names where a secret lives (`..._FILE`, `..._PATH`)
# is not one.
SECRET_KEY = re.compile(r"PASSWORD|PASSWD|(^|_)PASS($|_)|REQUIREPASS|MASTERAUTH|API_?KEYS?|TOKEN|SECRET|CREDENTIAL",
                        re.IGNORECASE)
SECRET_KEY_EXEMPT = re.compile(r"_(FILE|PATH|DIR|NAME|REF)$", re.IGNORECASE)


def looks_secret(key: str) -> bool:
    return bool(SECRET_KEY.search(key)) and not SECRET_KEY_EXEMPT.search(key)


# --- Kubernetes ---------------------------------------------------------------------------

def overlay_dirs() -> list[Path]:
    """Every ``k8s/overlays/<name>/`` that holds a kustomization file."""
    root = K8S / "overlays"
    if not root.is_dir():
        return []
    names = ("kustomization.yaml", "kustomization.yml", "Kustomization")
    return sorted(d for d in root.iterdir() if d.is_dir() and any((d / n).is_file() for n in names))


class RenderError(Exception):
    pass


@functools.cache
def render_overlay(overlay: Path) -> tuple[dict, ...]:
    """The resources ``kubectl kustomize <overlay>`` prints, as dicts.

    Raises :class:`RenderError` with kubectl's message when the overlay does not build, and
    ``FileNotFoundError`` when kubectl is not installed.
    """
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise FileNotFoundError("kubectl is not on PATH")
    done = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RenderError(f"`kubectl kustomize {overlay.relative_to(REPO_ROOT)}` failed:\n{done.stderr.strip()}")
    try:
        return tuple(doc for doc in yaml.load_all(done.stdout, Loader=_Loader) if doc)
    except yaml.YAMLError as error:
        raise RenderError(f"`kubectl kustomize {overlay.relative_to(REPO_ROOT)}` printed YAML that does not parse: "
                          f"{error}")


def rendered(overlay: Path) -> tuple[dict, ...]:
    """:func:`render_overlay` for a test: skips when kubectl is missing (fails under CI),
    fails (with kubectl's message) when the overlay does not render."""
    try:
        return render_overlay(overlay)
    except FileNotFoundError:
        needs.program("kubectl")
    except RenderError as error:
        pytest.fail(str(error), pytrace=False)


def resource_name(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('name', '?')}"


_POD_TEMPLATE_PATHS = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}


def pod_templates(doc: dict) -> Iterator[tuple[str, dict]]:
    """``(label, pod template)`` for each pod template in a workload: ``({"metadata":..,
    "spec":..})``; a Pod is its own template; an AscendJob has one per replica type."""
    kind = doc.get("kind")
    if kind == "Pod":
        yield resource_name(doc), doc
    elif kind in _POD_TEMPLATE_PATHS:
        node: Any = doc
        for key in _POD_TEMPLATE_PATHS[kind]:
            node = (node or {}).get(key)
        if node:
            yield resource_name(doc), node
    elif kind == "AscendJob":
        for replica, spec in ((doc.get("spec") or {}).get("replicaSpecs") or {}).items():
            if spec and spec.get("template"):
                yield f"{resource_name(doc)} replica {replica}", spec["template"]


def containers(pod_spec: dict) -> Iterator[tuple[str, dict]]:
    """``("container" | "initContainer", container)`` for every container of a pod spec."""
    for container in pod_spec.get("initContainers") or []:
        yield "initContainer", container
    for container in pod_spec.get("containers") or []:
        yield "container", container


def image_problem(image: str | None) -> str | None:
    """Why ``image`` is not pinned (no tag, or ``latest``), or None when it is."""
    if not image:
        return "has no image"
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag (means :latest)"
    tag = last.rsplit(":", 1)[1]
    if not tag:
        return f"image {image!r} has an empty tag"
    if tag.lower() == "latest":
        return f"image {image!r} uses the tag latest"
    return None


# --- CRD schemas --------------------------------------------------------------------------

@functools.cache
def _crd(filename: str) -> dict:
    return yaml.load((SCHEMAS / filename).read_text(), Loader=_Loader)


def _strict(node: Any) -> Any:
    """A CRD's OpenAPI v3 schema as a JSON schema that rejects unknown fields (as the API
    server's strict field validation, `kubectl apply`'s default, does) and knows
    ``nullable``."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def crd_group(doc: dict) -> str | None:
    """The API group of ``doc`` when it is one whose CRDs are kept in schemas/."""
    api_version = str(doc.get("apiVersion", ""))
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    return group if group in CRD_GROUPS else None


def crd_errors(doc: dict) -> list[str]:
    """Every way ``doc`` breaks the schema of its CRD in schemas/ (empty when it is valid)."""
    group = crd_group(doc)
    name = resource_name(doc)
    if (group, doc.get("kind")) not in CRD_FILES:
        kept = sorted(kind for g, kind in CRD_FILES if g == group)
        return [f"{name}: no CRD for {group} {doc.get('kind')} in tests/deploy/schemas (kept: {kept})"]
    crd = _crd(CRD_FILES[group, doc.get("kind")])
    version = str(doc["apiVersion"]).split("/", 1)[1]
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    if version not in served:
        return [f"{name}: apiVersion {doc['apiVersion']} is not served by the CRD (served: {sorted(served)})"]
    schema = _strict(served[version]["schema"]["openAPIV3Schema"])
    validator = jsonschema.Draft4Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{name}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


# --- the AscendJob template ----------------------------------------------------------------

def render_ascendjob() -> tuple[dict, ...]:
    """The resources the trainer renders for a multi-node job (the AscendJob, and its
    NetworkPolicy), with sample values, parsed."""
    from trainer.ascendjob import Cluster, render_ascendjob as render

    cluster = Cluster(image="registry.example.com/ssdstack/trainer-ascend:0.1.0")
    text = render("0123456789abcdef0123456789abcdef", cluster, 4, Path("/data/store/jobs/x/rank-job.json"))
    return tuple(doc for doc in yaml.load_all(text, Loader=_Loader) if doc)


# --- compose --------------------------------------------------------------------------------

def compose_files() -> list[Path]:
    """The compose files at the repository root: bases first, then the override files."""
    found = [p for pattern in ("docker-compose*.yml", "docker-compose*.yaml", "compose*.yml", "compose*.yaml")
             for p in REPO_ROOT.glob(pattern)]
    return sorted(set(found), key=lambda p: (not is_base_compose(p), p.name))


def is_base_compose(path: Path) -> bool:
    return path.name in ("docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml")


class _Reset:
    def __repr__(self) -> str:
        return "!reset"


RESET = _Reset()


class _ComposeLoader(_Loader):  # type: ignore[misc, valid-type]
    pass


_ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)
_ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode)
    else loader.construct_mapping(node, deep=True) if isinstance(node, yaml.MappingNode)
    else loader.construct_scalar(node))


def load_compose(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_ComposeLoader) or {}


_REPLACE_LISTS = {"command", "entrypoint", "test", "dns", "dns_search", "env_file", "tmpfs", "profiles"}


def merge_compose(base: Any, override: Any, key: str = "") -> Any:
    """``override`` laid over ``base`` as ``docker compose -f base -f override`` does, close
    enough for schema and policy checks: mappings merge, ``command``-like lists are
    replaced, other lists are appended without duplicates, ``!reset`` removes."""
    if override is RESET:
        return RESET
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for k, v in override.items():
            value = merge_compose(base.get(k), v, k) if k in base else v
            if value is RESET:
                merged.pop(k, None)
            else:
                merged[k] = value
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in _REPLACE_LISTS:
        return base + [item for item in override if item not in base]
    return copy.deepcopy(override)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a dotenv file (comments, blanks and ``export`` skipped)."""
    env = {}
    if not path.is_file():
        return env
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


class Reference:
    """One ``${NAME...}`` or ``$NAME`` in a compose value: ``op`` is ``""``, ``:-``, ``-``,
    ``:?``, ``?``, ``:+`` or ``+``; ``arg`` the text after it."""

    def __init__(self, name: str, op: str, arg: str):
        self.name, self.op, self.arg = name, op, arg

    def __str__(self) -> str:
        return "${" + self.name + self.op + self.arg + "}" if self.op or self.arg else "${" + self.name + "}"


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS = (":-", ":?", ":+", "-", "?", "+")


def interpolate(text: str, env: dict[str, str]) -> tuple[str, list[Reference]]:
    """Compose's interpolation of ``text`` with ``env``: the result and the references met.
    A required variable (``:?``/``?``) missing from ``env`` becomes ``sample-<name>``, as
    if the user had set it; ``$$`` is a literal ``$``."""
    out, refs, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if text.startswith("${", i):
            depth, j = 1, i + 2
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            body = text[i + 2:j - 1]
            match = _NAME.match(body)
            name = match.group(0) if match else body
            rest = body[len(name):]
            op = next((o for o in _OPS if rest.startswith(o)), "")
            arg = rest[len(op):]
            ref = Reference(name, op, arg)
            refs.append(ref)
            inner, inner_refs = interpolate(arg, env)
            refs += inner_refs
            value = env.get(name)
            if op in (":-", "-"):
                value = inner if (value is None or (op == ":-" and value == "")) else value
            elif op in (":?", "?"):
                if value is None or (op == ":?" and value == ""):
                    value = f"sample-{name.lower()}"
            elif op in (":+", "+"):
                value = inner if value is not None and (op == "+" or value != "") else ""
            out.append(value or "")
            i = j
            continue
        match = _NAME.match(text, i + 1)
        if match:
            refs.append(Reference(match.group(0), "", ""))
            out.append(env.get(match.group(0), ""))
            i = match.end()
        else:
            out.append("$")
            i += 1
    return "".join(out), refs


_INT = re.compile(r"^-?\d+$")


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    """``node`` with every string interpolated; a value that was one ``${...}`` and now reads
    as a number or boolean becomes one (compose casts such values before validating)."""
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    if isinstance(node, str) and "$" in node:
        value, refs = interpolate(node, env)
        if refs and re.fullmatch(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*", node.strip()):
            if _INT.match(value):
                return int(value)
            if value in ("true", "false"):
                return value == "true"
        return value
    return node


def references(node: Any, where: str = "") -> Iterator[tuple[str, Reference]]:
    """``(path, reference)`` for every interpolation in a compose tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from references(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from references(v, f"{where}[{i}]")
    elif isinstance(node, str) and "$" in node:
        for ref in interpolate(node, {})[1]:
            yield where, ref


def environment(service: dict) -> dict[str, Any]:
    """A service's ``environment`` as a mapping, from either of compose's two forms."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


@functools.cache
def compose_schema() -> dict:
    return json.loads((SCHEMAS / "compose-spec.json").read_text())


def compose_schema_errors(model: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(compose_schema())
    errors = sorted(validator.iter_errors(model), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def compose_combinations() -> list[tuple[str, dict]]:
    """``(label, model)`` for each base compose file alone and each override file laid over
    the base, before interpolation."""
    loaded = {}
    for path in compose_files():
        try:
            loaded[path] = load_compose(path)
        except yaml.YAMLError:
            continue  # test_compose_file_meets_the_compose_spec reports it
    bases = [p for p in loaded if is_base_compose(p)]
    combos = [(p.name, loaded[p]) for p in bases]
    if bases:
        for override in (p for p in loaded if not is_base_compose(p)):
            combos.append((f"{bases[0].name} + {override.name}", merge_compose(loaded[bases[0]], loaded[override])))
    return combos


# --- Dockerfiles ------------------------------------------------------------------------------

def dockerfiles() -> list[Path]:
    docker = REPO_ROOT / "docker"
    found = set(docker.glob("*.Dockerfile")) | set(docker.glob("**/Dockerfile")) if docker.is_dir() else set()
    return sorted(found | set(REPO_ROOT.glob("Dockerfile*")))


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        lines.append((word.upper(), rest.strip()))
        current = ""
    return lines


def resolve_from_images(path: Path) -> list[tuple[str, str | None, list[str]]]:
    """``(FROM line, resolved image or None for a stage/scratch, ARGs it uses that have no
    default)``, resolved through the ARG defaults."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    out: list[tuple[str, str | None, list[str]]] = []
    for word, rest in dockerfile_instructions(path):
        if word == "ARG":
            for part in rest.split():
                name, eq, default = part.partition("=")
                if eq:
                    args.setdefault(name, default.strip("'\""))
                else:
                    args.setdefault(name, "")
        elif word == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            image, refs = interpolate(parts[0], args) if parts else ("", [])
            unset = [ref.name for ref in refs if not args.get(ref.name) and ref.op not in (":-", "-")]
            if len(parts) >= 3 and parts[1].lower() == "as":
                stages.add(parts[2].lower())
            if image.lower() in stages or image == "scratch":
                out.append((f"FROM {rest}", None, []))
            else:
                out.append((f"FROM {rest}", image, unset))
    return out


def dockerfile_of(service: dict) -> Path | None:
    """The Dockerfile a compose service builds from (None for an image-only service)."""
    build = service.get("build")
    if not build:
        return None
    context = REPO_ROOT / (build if isinstance(build, str) else build.get("context", "."))
    return context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")


def final_stage(path: Path) -> dict:
    """The ``USER`` and ``HEALTHCHECK`` in force in the last stage of a Dockerfile, stages
    built ``FROM`` an earlier stage inheriting them."""
    stages: dict[str, dict] = {}
    current: dict = {}
    for word, rest in dockerfile_instructions(path):
        if word == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            parent = parts[0].lower() if parts else ""
            current = dict(stages.get(parent, {"user": None, "healthcheck": None}))
            if len(parts) >= 3 and parts[1].lower() == "as":
                stages[parts[2].lower()] = current
        elif word == "USER":
            current["user"] = rest.split()[0] if rest else None
        elif word == "HEALTHCHECK":
            current["healthcheck"] = rest
    return current
