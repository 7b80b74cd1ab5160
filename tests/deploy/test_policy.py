"""Deployment policy over what would really be applied: the rendered kustomize overlays
(and the AscendJob template filled with sample values), the compose files (each base, and
each override laid over it) and the Dockerfiles.

Kubernetes: every container and initContainer has cpu and memory requests and limits and a
restricted securityContext; long-running containers have liveness and readiness probes
(workers by an exec'd heartbeat check, never `celery inspect`, the gateway over HTTP); no
image is untagged or `latest`; no ConfigMap holds a secret; the ascend overlay puts the
trainer on Ascend 910 and the inferencer on Ascend 310/310P nodes. Compose: every service
has a healthcheck, images are pinned, secrets are required variables (`${VAR:?...}`).
Dockerfiles: base images pinned through their ARG defaults, a non-root USER, a HEALTHCHECK.
Every failure names the resource (``Kind/name``) or service and the container."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy_manifests import (
    ASCENDJOB_TEMPLATE, LONG_RUNNING, REPO_ROOT, compose_combinations, compose_files, containers,
    dockerfile_instructions, dockerfile_of, dockerfiles, environment, final_stage, image_problem, interpolate,
    is_base_compose, load_compose, looks_secret, overlay_dirs, pod_templates, read_env_file, references,
    render_ascendjob, rendered, resolve_from_images,
)

OVERLAYS = overlay_dirs()
# What the Kubernetes checks look at: each overlay, and the AscendJob template when it exists.
TARGETS = [(o.name, o) for o in OVERLAYS] + ([("ascendjob-template", ASCENDJOB_TEMPLATE)]
                                             if ASCENDJOB_TEMPLATE.is_file() else [])
target_param = pytest.mark.parametrize("target", [t[1] for t in TARGETS], ids=[t[0] for t in TARGETS])
overlay_param = pytest.mark.parametrize("overlay", OVERLAYS, ids=[o.name for o in OVERLAYS])
COMBOS = compose_combinations()
combo_param = pytest.mark.parametrize("label, model", COMBOS, ids=[c[0] for c in COMBOS])
DOCKERFILES = dockerfiles()
dockerfile_param = pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])

WORKER = re.compile(r"trainer|converter|inferencer|worker|celery", re.IGNORECASE)
ASCEND_DRIVER = "/usr/local/Ascend/driver"
CELERY_INSPECT = re.compile(r"celery\b.*\binspect\b|inspect\s+ping", re.IGNORECASE)


def _report(problems: list[str], what: str) -> None:
    if problems:
        pytest.fail(f"{what}:\n  " + "\n  ".join(problems), pytrace=False)


def _docs(target: Path) -> tuple[dict, ...]:
    return render_ascendjob() if target == ASCENDJOB_TEMPLATE else rendered(target)


def _name(target: Path) -> str:
    return "trainer/ascendjob.yaml" if target == ASCENDJOB_TEMPLATE else f"overlay {target.name}"


def _containers(docs):
    """``(workload doc, "Kind/name", pod spec, "container"|"initContainer", container)``."""
    for doc in docs:
        for label, template in pod_templates(doc):
            pod = template.get("spec") or {}
            for ctype, container in containers(pod):
                yield doc, label, pod, ctype, container


def _command(container: dict) -> str:
    return " ".join(map(str, (container.get("command") or []) + (container.get("args") or [])))


def _probe_command(probe: dict) -> str:
    return " ".join(map(str, ((probe or {}).get("exec") or {}).get("command") or []))


def _is_sidecar(ctype: str, container: dict) -> bool:
    return ctype == "initContainer" and container.get("restartPolicy") == "Always"


def _is_worker(doc: dict, container: dict) -> bool:
    text = " ".join([str((doc.get("metadata") or {}).get("name", "")), str(container.get("name", "")),
                     _command(container)])
    return bool(WORKER.search(text)) and "flower" not in text.lower()


# --- Kubernetes -----------------------------------------------------------------------------------

@target_param
def test_every_container_has_cpu_and_memory_requests_and_limits(target):
    """Protects the cluster from unbounded pods and the scheduler from guessing: every
    container and initContainer sets requests and limits for cpu and memory."""
    problems = []
    for _, label, _, ctype, container in _containers(_docs(target)):
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if not (resources.get(part) or {}).get(resource):
                    problems.append(f"{label} {ctype} {container.get('name')}: no resources.{part}.{resource}")
    _report(problems, _name(target))


@target_param
def test_long_running_containers_have_liveness_and_readiness_probes(target):
    """Protects against hung pods that stay in rotation: every container of a Deployment,
    StatefulSet or DaemonSet (and each sidecar initContainer) has a liveness and a readiness
    probe. Plain initContainers cannot have them and batch pods (Job, AscendJob) run to
    completion, so they are exempt."""
    problems = []
    for doc, label, _, ctype, container in _containers(_docs(target)):
        if doc.get("kind") not in LONG_RUNNING or (ctype == "initContainer" and not _is_sidecar(ctype, container)):
            continue
        for probe in ("livenessProbe", "readinessProbe"):
            if not container.get(probe):
                problems.append(f"{label} {ctype} {container.get('name')}: no {probe}")
    _report(problems, _name(target))


@target_param
def test_worker_probes_exec_a_heartbeat_check_not_celery_inspect(target):
    """Protects the workers' probes from `celery inspect ping`, which needs the broker and
    a free worker and times out while a training task runs: worker probes are `exec`
    probes (the heartbeat-file check), and no probe anywhere calls `celery inspect`."""
    problems = []
    for doc, label, _, ctype, container in _containers(_docs(target)):
        where = f"{label} {ctype} {container.get('name')}"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            spec = container.get(probe)
            if not spec:
                continue
            if CELERY_INSPECT.search(_probe_command(spec)):
                problems.append(f"{where}: {probe} runs `{_probe_command(spec)}` (celery inspect)")
            elif doc.get("kind") in LONG_RUNNING and _is_worker(doc, container) and "exec" not in spec:
                problems.append(f"{where}: {probe} is not an exec probe ({sorted(spec)})")
    _report(problems, _name(target))


@overlay_param
def test_the_gateway_is_probed_over_http(overlay):
    """Protects the gateway's probes: they ask its HTTP health endpoints, so a wedged event
    loop fails them."""
    problems, seen = [], False
    for doc, label, _, ctype, container in _containers(rendered(overlay)):
        if doc.get("kind") not in LONG_RUNNING or "gateway" not in str(doc["metadata"].get("name", "")) \
                or ctype != "container":
            continue
        seen = True
        for probe in ("livenessProbe", "readinessProbe"):
            if not (container.get(probe) or {}).get("httpGet"):
                problems.append(f"{label} container {container.get('name')}: {probe} is not an httpGet probe")
    assert seen, f"overlay {overlay.name}: no gateway workload"
    _report(problems, f"overlay {overlay.name}")


@target_param
def test_every_container_runs_restricted(target):
    """Protects the restricted Pod Security level: each container and initContainer runs as
    non-root, without privilege escalation or privileged mode, with every capability
    dropped and the RuntimeDefault seccomp profile (pod or container level)."""
    problems = []
    for _, label, pod, ctype, container in _containers(_docs(target)):
        pod_sc = pod.get("securityContext") or {}
        sc = container.get("securityContext") or {}
        where = f"{label} {ctype} {container.get('name')}"
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{where}: runAsNonRoot is not true (container or pod securityContext)")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{where}: runAsUser is 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: securityContext.allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            problems.append(f"{where}: securityContext.privileged is true")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{where}: securityContext.capabilities.drop lacks ALL")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile.type is {seccomp!r}, not RuntimeDefault")
    _report(problems, _name(target))


@target_param
def test_kubernetes_images_are_pinned(target):
    """Protects reproducible roll-outs: no container image is untagged or `latest`."""
    problems = []
    for _, label, _, ctype, container in _containers(_docs(target)):
        problem = image_problem(container.get("image"))
        if problem:
            problems.append(f"{label} {ctype} {container.get('name')}: {problem}")
    _report(problems, _name(target))


_CREDENTIAL_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE)
# `KEY=value`, `KEY: value` (env and YAML files) and `key value` (redis.conf) lines.
_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)(?:\s*[=:]\s*|\s+)(\S.*)$")


@overlay_param
def test_configmaps_hold_no_secrets(overlay):
    """Protects secrets from landing in ConfigMaps (readable by anyone who can read the
    namespace's configuration): no ConfigMap key named like a password, API key, token or
    secret has a value, no value is a URL with a password in it, and no file kept in a
    ConfigMap assigns such a key."""
    problems = []
    for doc in rendered(overlay):
        if doc.get("kind") != "ConfigMap":
            continue
        for key, value in {**(doc.get("data") or {}), **(doc.get("binaryData") or {})}.items():
            text = str(value or "")
            if looks_secret(key) and text.strip():
                problems.append(f"ConfigMap/{doc['metadata']['name']}: key {key} holds a value; "
                                "put it in a Secret")
            if _CREDENTIAL_URL.search(text):
                problems.append(f"ConfigMap/{doc['metadata']['name']}: key {key} holds a URL with a password")
            for line in text.splitlines() if "\n" in text else []:
                match = None if line.lstrip().startswith("#") else _ASSIGNMENT.match(line)
                if match and looks_secret(match.group(1)) and match.group(2).strip().strip("'\""):
                    problems.append(f"ConfigMap/{doc['metadata']['name']}: file {key} sets {match.group(1)}")
    _report(problems, f"overlay {overlay.name}")


def _npu_pods(docs, word: str) -> list[tuple[str, dict]]:
    return [(label, template.get("spec") or {}) for doc in docs if word in str((doc.get("metadata") or {}).get("name"))
            for label, template in pod_templates(doc)]


def _npu_problems(label: str, pod: dict, resources: tuple[str, ...]) -> list[str]:
    problems = []
    chosen = None
    for ctype, container in containers(pod):
        res = container.get("resources") or {}
        for resource in resources:
            limit = (res.get("limits") or {}).get(resource)
            if limit is None:
                continue
            chosen = resource
            if not str(limit).isdigit() or int(limit) < 1:
                problems.append(f"{label} {ctype} {container.get('name')}: limits[{resource}] is {limit!r}")
            request = (res.get("requests") or {}).get(resource)
            if request is not None and str(request) != str(limit):
                problems.append(f"{label} {ctype} {container.get('name')}: requests[{resource}] {request} != "
                                f"limits {limit} (extended resources cannot be overcommitted)")
            driver_volumes = {v.get("name") for v in pod.get("volumes") or []
                              if str((v.get("hostPath") or {}).get("path", "")).rstrip("/") == ASCEND_DRIVER}
            if not driver_volumes & {m.get("name") for m in container.get("volumeMounts") or []}:
                problems.append(f"{label} {ctype} {container.get('name')}: does not mount the hostPath "
                                "/usr/local/Ascend/driver")
    if chosen is None:
        return problems + [f"{label}: no container has resources.limits for {' or '.join(resources)}"]
    wanted = "huawei-" + chosen.split("/", 1)[1]
    selector = (pod.get("nodeSelector") or {}).get("accelerator")
    if selector != wanted:
        problems.append(f"{label}: nodeSelector accelerator is {selector!r}, not {wanted!r} (it asks for {chosen})")
    return problems


def test_the_ascend_overlay_puts_the_trainer_and_inferencer_on_npus():
    """Protects the Ascend deployment: the trainer asks the device plugin for
    huawei.com/Ascend910 and the inferencer for huawei.com/Ascend310 or Ascend310P, each
    with the matching `accelerator=huawei-Ascend...` nodeSelector and the driver mounted
    from the host."""
    ascend = [o for o in OVERLAYS if o.name == "ascend"]
    if not ascend:
        pytest.fail("there is no k8s/overlays/ascend", pytrace=False)
    docs = rendered(ascend[0])
    problems = []
    for word, resources in (("trainer", ("huawei.com/Ascend910",)),
                            ("inferencer", ("huawei.com/Ascend310", "huawei.com/Ascend310P"))):
        pods = _npu_pods(docs, word)
        if not pods:
            problems.append(f"no workload named like {word!r}")
        for label, pod in pods:
            problems += _npu_problems(label, pod, resources)
    _report(problems, "overlay ascend")


NON_ASCEND = [o for o in OVERLAYS if "ascend" not in o.name]


@pytest.mark.parametrize("overlay", NON_ASCEND, ids=[o.name for o in NON_ASCEND])
def test_non_ascend_overlays_ask_for_no_npu(overlay):
    """Protects the CPU deployment from pods that never schedule on a cluster without the
    Ascend device plugin: no huawei.com resources, accelerator selectors or Ascend driver
    mounts outside the ascend overlays."""
    problems = []
    for _, label, pod, ctype, container in _containers(rendered(overlay)):
        res = container.get("resources") or {}
        asked = [k for part in ("requests", "limits") for k in (res.get(part) or {}) if k.startswith("huawei.com/")]
        if asked:
            problems.append(f"{label} {ctype} {container.get('name')}: asks for {sorted(set(asked))}")
    for doc in rendered(overlay):
        for label, template in pod_templates(doc):
            pod = template.get("spec") or {}
            if str((pod.get("nodeSelector") or {}).get("accelerator", "")).startswith("huawei-"):
                problems.append(f"{label}: nodeSelector accelerator {pod['nodeSelector']['accelerator']}")
            for volume in pod.get("volumes") or []:
                if str((volume.get("hostPath") or {}).get("path", "")).startswith("/usr/local/Ascend"):
                    problems.append(f"{label}: hostPath volume {volume.get('name')} on {volume['hostPath']['path']}")
    _report(problems, f"overlay {overlay.name}")


# --- compose ----------------------------------------------------------------------------------------

@combo_param
def test_compose_services_have_healthchecks(label, model):
    """Protects `depends_on: condition: service_healthy` and `docker compose ps`: every
    service (those in profiles too) has a healthcheck, its own or its Dockerfile's, that is
    not disabled and does not call `celery inspect`."""
    problems = []
    for name, service in (model.get("services") or {}).items():
        service = service or {}
        health = service.get("healthcheck") or {}
        test = health.get("test")
        test_text = " ".join(map(str, test)) if isinstance(test, list) else str(test or "")
        if health.get("disable") or (isinstance(test, list) and test[:1] == ["NONE"]):
            problems.append(f"service {name}: healthcheck disabled")
        elif test:
            if CELERY_INSPECT.search(test_text):
                problems.append(f"service {name}: healthcheck runs `{test_text}` (celery inspect)")
        else:
            dockerfile = dockerfile_of(service)
            inherited = final_stage(dockerfile).get("healthcheck") if dockerfile and dockerfile.is_file() else None
            if not inherited or inherited.upper().startswith("NONE"):
                problems.append(f"service {name}: no healthcheck (none in compose"
                                f"{', none in ' + str(dockerfile.relative_to(REPO_ROOT)) if dockerfile else ''})")
            elif CELERY_INSPECT.search(inherited):
                problems.append(f"service {name}: its Dockerfile's HEALTHCHECK runs celery inspect")
    _report(problems, label)


@combo_param
def test_compose_images_are_pinned(label, model):
    """Protects reproducible `docker compose up`: every service image and every
    `*IMAGE*` build argument resolves, with the file's defaults alone and with
    .env.example, to a tagged image that is not `latest`."""
    envs = {"defaults only": {}, ".env.example": read_env_file(REPO_ROOT / ".env.example")}
    problems = []
    for name, service in (model.get("services") or {}).items():
        service = service or {}
        candidates = []
        if service.get("image"):
            candidates.append(("image", str(service["image"])))
        build = service.get("build")
        args = build.get("args") if isinstance(build, dict) else None
        if isinstance(args, list):
            args = dict(a.split("=", 1) if "=" in a else (a, "") for a in args)
        for key, value in (args or {}).items():
            if "IMAGE" in key.upper():
                candidates.append((f"build.args.{key}", str(value if value is not None else "")))
        for where, raw in candidates:
            for env_name, env in envs.items():
                problem = image_problem(interpolate(raw, env)[0])
                if problem:
                    problems.append(f"service {name}: {where} {raw!r} with {env_name}: {problem}")
    _report(problems, label)


ASCEND_DEVICES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")


def test_the_ascend_compose_variant_gives_the_npu_services_their_devices():
    """Protects `docker compose -f docker-compose.yml -f docker-compose.ascend.yml up`:
    the trainer and the inferencer get a /dev/davinci<N> card, /dev/davinci_manager,
    /dev/devmm_svm and /dev/hisi_hdc, and the host's driver mounted."""
    ascend = [(label, model) for label, model in COMBOS if "ascend" in label]
    if not ascend:
        pytest.fail("no Ascend compose variant (docker-compose.ascend.yml)", pytrace=False)
    problems = []
    for label, model in ascend:
        services = model.get("services") or {}
        for name in ("trainer", "inferencer"):
            service = services.get(name) or {}
            devices = [str(d if isinstance(d, str) else (d or {}).get("source", ""))
                       for d in service.get("devices") or []]
            devices = [interpolate(d, {})[0].split(":")[0] for d in devices]
            if not any(re.fullmatch(r"/dev/davinci\d+", d) for d in devices):
                problems.append(f"{label}: service {name} maps no /dev/davinci<N> card ({devices})")
            problems += [f"{label}: service {name} does not map {d}" for d in ASCEND_DEVICES if d not in devices]
            mounts = [str(v if isinstance(v, str) else (v or {}).get("target", ""))
                      for v in service.get("volumes") or []]
            if not any(ASCEND_DRIVER in m for m in mounts):
                problems.append(f"{label}: service {name} does not mount {ASCEND_DRIVER}")
    _report(problems, "the Ascend compose variant")


COMPOSE_FILES = compose_files()


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=[p.name for p in COMPOSE_FILES])
def test_compose_secrets_are_required_variables(path):
    """Protects against a stack that starts with a missing or default password: each
    variable named like a password, API key, token or secret is written `${VAR:?message}`
    (compose stops at once when it is unset), and no service sets such a variable to a
    literal or passes it through unchecked. The base file has at least one."""
    model = load_compose(path)
    problems = []
    required = 0
    for where, ref in references(model):
        if looks_secret(ref.name):
            if ref.op == ":?":
                required += 1
            else:
                problems.append(f"{where}: {ref} does not fail fast; write ${{{ref.name}:?set {ref.name}}}")
    for name, service in (model.get("services") or {}).items():
        for key, value in environment(service or {}).items():
            if not looks_secret(key):
                continue
            if value is None:
                problems.append(f"service {name}: environment {key} is passed through unchecked; "
                                f"write {key}: ${{{key}:?...}}")
            elif not interpolate(str(value), {})[1]:
                problems.append(f"service {name}: environment {key} is a literal value")
    if is_base_compose(path) and not required:
        problems.append("no secret is a required `${VAR:?...}` variable (the Redis password, the API keys)")
    _report(problems, path.name)


# --- Dockerfiles -------------------------------------------------------------------------------------

def test_there_are_dockerfiles():
    """Protects the image checks below from passing on an empty docker/ folder."""
    assert DOCKERFILES, "no docker/*.Dockerfile"


@dockerfile_param
def test_dockerfile_base_images_are_pinned(dockerfile):
    """Protects reproducible builds: `ARG BASE_IMAGE` has a default, and every `FROM`
    resolves through the ARG defaults to a tagged image that is not `latest`."""
    rel = dockerfile.relative_to(REPO_ROOT)
    problems = []
    for line, image, unset in resolve_from_images(dockerfile):
        if image is None:
            continue
        problem = image_problem(image)
        if problem:
            problems.append(f"{line}: {problem}" + (f" (no default for ARG {', '.join(unset)})" if unset else ""))
    declared = [rest for word, rest in dockerfile_instructions(dockerfile) if word == "ARG"
                and rest.split("=", 1)[0].strip() == "BASE_IMAGE"]
    if not declared:
        problems.append("no `ARG BASE_IMAGE`")
    elif "=" not in declared[0]:
        problems.append("`ARG BASE_IMAGE` has no default")
    _report(problems, str(rel))


@dockerfile_param
def test_dockerfiles_run_as_non_root_with_a_healthcheck(dockerfile):
    """Protects the images' own defaults (what `docker run` and compose get without any
    securityContext): the final stage switches to a non-root USER and has a HEALTHCHECK."""
    final = final_stage(dockerfile)
    problems = []
    user = final.get("user")
    if not user or user.split(":")[0] in ("root", "0"):
        problems.append(f"final stage runs as {user or 'the base image user (root)'}; add a non-root USER")
    if not final.get("healthcheck") or final["healthcheck"].upper().startswith("NONE"):
        problems.append("final stage has no HEALTHCHECK")
    _report(problems, str(dockerfile.relative_to(REPO_ROOT)))
