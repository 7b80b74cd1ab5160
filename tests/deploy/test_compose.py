"""The compose files meet the Compose Specification's JSON schema (kept in ``schemas/``):
each file alone, and each override file (``docker-compose.<name>.yml``) laid over
``docker-compose.yml`` as ``docker compose -f docker-compose.yml -f <override>`` does.

Compose interpolates variables before it validates, so the tests do too: with the values
of ``.env.example`` (the documented ``cp .env.example .env``), each required variable
(``${VAR:?...}``) that it leaves unset taking a sample value."""
from __future__ import annotations

import pytest
import yaml

from deploy_manifests import (
    REPO_ROOT, compose_combinations, compose_files, compose_schema_errors, dockerfile_of, dockerfiles, final_stage,
    interpolate_tree, is_base_compose, load_compose, merge_compose, read_env_file,
)

FILES = compose_files()
BASES = [p for p in FILES if is_base_compose(p)]
OVERRIDES = [p for p in FILES if not is_base_compose(p)]
ENV = read_env_file(REPO_ROOT / ".env.example")


def _report(problems: list[str], what: str) -> None:
    if problems:
        pytest.fail(f"{what}:\n  " + "\n  ".join(problems), pytrace=False)


def test_the_compose_file_and_its_env_example_exist():
    """Protects `docker compose up` from the repository root: docker-compose.yml is there,
    with the .env.example it documents."""
    assert BASES, "no docker-compose.yml (or compose.yaml) at the repository root"
    assert (REPO_ROOT / ".env.example").is_file(), ".env.example is missing"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_compose_file_meets_the_compose_spec(path):
    """Protects `docker compose` from refusing a file: it parses as YAML and, interpolated,
    validates against the Compose Specification schema (an override file alone too: the
    schema requires nothing that an override leaves out)."""
    try:
        model = load_compose(path)
    except yaml.YAMLError as error:
        pytest.fail(f"{path.name} is not valid YAML: {error}", pytrace=False)
    _report(compose_schema_errors(interpolate_tree(model, ENV)), f"{path.name} against the compose spec")


@pytest.mark.parametrize("override", OVERRIDES, ids=[p.name for p in OVERRIDES])
def test_override_laid_over_the_base_meets_the_compose_spec(override):
    """Protects `docker compose -f docker-compose.yml -f <override> up` (the Ascend
    variant): the merged model validates against the Compose Specification schema."""
    assert BASES, "no base docker-compose.yml to lay the override over"
    merged = merge_compose(load_compose(BASES[0]), load_compose(override))
    _report(compose_schema_errors(interpolate_tree(merged, ENV)),
            f"{BASES[0].name} + {override.name} against the compose spec")


def _has_dockerfile_healthcheck(service: dict) -> bool:
    dockerfile = dockerfile_of(service)
    health = final_stage(dockerfile).get("healthcheck") if dockerfile and dockerfile.is_file() else None
    return bool(health) and not health.upper().startswith("NONE")


@pytest.mark.parametrize("label, model", compose_combinations(), ids=[c[0] for c in compose_combinations()])
def test_depends_on_names_services_that_report_health(label, model):
    """Protects start-up order: every `depends_on` names a service of the file, and one
    waited on with `condition: service_healthy` has a healthcheck (its own or its image's
    HEALTHCHECK), without which compose would wait forever."""
    services = model.get("services") or {}
    problems = []
    for name, service in services.items():
        depends = (service or {}).get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {} for d in depends}
        for target, condition in depends.items():
            if target not in services:
                problems.append(f"service {name}: depends_on {target!r}, which is not a service")
            elif (condition or {}).get("condition") == "service_healthy":
                health = (services[target] or {}).get("healthcheck") or {}
                if (not health or health.get("disable")) and not _has_dockerfile_healthcheck(services[target] or {}):
                    problems.append(f"service {name}: waits for {target} to be healthy, "
                                    f"but {target} has no healthcheck")
    _report(problems, label)


def test_the_dockerfiles_exist_for_each_service():
    """Protects `docker compose build`: a Dockerfile per service of the issue (trainer,
    converter, inferencer, gateway) under docker/."""
    names = " ".join(p.name.lower() for p in dockerfiles())
    missing = [s for s in ("trainer", "converter", "inferencer", "gateway") if s not in names]
    assert not missing, f"docker/ has no Dockerfile for {missing} (found: {[p.name for p in dockerfiles()]})"
