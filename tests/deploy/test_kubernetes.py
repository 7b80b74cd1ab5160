"""The Kubernetes manifests: every overlay under ``k8s/overlays/`` renders with
``kubectl kustomize``, every rendered resource meets the Kubernetes schemas (strict: no
unknown fields) or, for custom resources, the CRD schema kept in ``schemas/``, and the
references between resources resolve. The AscendJob template is filled with sample values
and checked against the Ascend operator's CRD."""
from __future__ import annotations

import kubernetes_validate
import pytest

from deploy_manifests import (
    ASCENDJOB_TEMPLATE, KUBERNETES_VERSION, REPO_ROOT, containers, crd_errors, crd_group, overlay_dirs,
    pod_templates, render_ascendjob, rendered, resource_name,
)

OVERLAYS = overlay_dirs()
overlay_param = pytest.mark.parametrize("overlay", OVERLAYS, ids=[o.name for o in OVERLAYS])

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass",
                  "StorageClass", "PersistentVolume", "IngressClass", "ValidatingWebhookConfiguration",
                  "MutatingWebhookConfiguration", "RuntimeClass"}


def _report(problems: list[str], what: str) -> None:
    if problems:
        pytest.fail(f"{what}:\n  " + "\n  ".join(problems), pytrace=False)


def test_the_cpu_and_ascend_overlays_exist():
    """Protects `kubectl apply -k k8s/overlays/cpu` and `.../ascend`, the two documented
    ways to deploy, from being renamed or removed."""
    names = {o.name for o in OVERLAYS}
    missing = {"cpu", "ascend"} - names
    assert not missing, f"k8s/overlays/ lacks the overlays {sorted(missing)} (found: {sorted(names)})"


@overlay_param
def test_overlay_renders(overlay):
    """Protects `kubectl apply -k`: the overlay builds with the kustomize in kubectl 1.32
    and every resource has apiVersion, kind and metadata.name."""
    docs = rendered(overlay)
    assert docs, f"{overlay.name}: `kubectl kustomize` rendered no resources"
    problems = [f"{resource_name(doc)}: missing {key}" for doc in docs for key in ("apiVersion", "kind")
                if not doc.get(key)]
    problems += [f"{resource_name(doc)}: no metadata.name" for doc in docs
                 if not (doc.get("metadata") or {}).get("name")]
    _report(problems, f"overlay {overlay.name}")


def _namespace(doc: dict) -> str | None:
    return (doc.get("metadata") or {}).get("namespace")


@overlay_param
def test_namespaced_resources_are_in_a_namespace_of_the_render(overlay):
    """Protects against a resource landing in `default` (or another namespace) where the
    stack's Services, Secrets and NetworkPolicies do not reach it."""
    docs = rendered(overlay)
    namespaces = {doc["metadata"]["name"] for doc in docs if doc.get("kind") == "Namespace"}
    assert namespaces, f"{overlay.name}: no Namespace resource"
    problems = [f"{resource_name(doc)}: namespace {_namespace(doc)!r}, not one of {sorted(namespaces)}"
                for doc in docs if doc.get("kind") not in CLUSTER_SCOPED and _namespace(doc) not in namespaces]
    _report(problems, f"overlay {overlay.name}")


@overlay_param
def test_only_a_namespace_of_host_path_pods_is_privileged(overlay):
    """Protects least privilege: each namespace audits and warns at Pod Security
    `restricted`; one that enforces anything weaker holds only pods that mount a host path
    (the NPU driver), and one that enforces `restricted` holds none (they would be refused)."""
    docs = rendered(overlay)
    problems = []
    for namespace in (doc for doc in docs if doc.get("kind") == "Namespace"):
        name, labels = namespace["metadata"]["name"], namespace["metadata"].get("labels") or {}
        for mode in ("audit", "warn"):
            if labels.get(f"pod-security.kubernetes.io/{mode}") != "restricted":
                problems.append(f"Namespace/{name}: {mode} is not restricted")
        pods = [(label, any((volume.get("hostPath") for volume in (template.get("spec") or {}).get("volumes") or [])))
                for doc in docs if _namespace(doc) == name for label, template in pod_templates(doc)]
        enforce = labels.get("pod-security.kubernetes.io/enforce")
        if enforce == "restricted":
            problems += [f"Namespace/{name} enforces restricted, which refuses {label} (a host path)"
                         for label, host in pods if host]
        else:
            problems += [f"Namespace/{name} enforces {enforce!r} for {label}, which mounts no host path"
                         for label, host in pods if not host]
            if not any(host for _, host in pods):
                problems.append(f"Namespace/{name} enforces {enforce!r} and holds no pod that needs it")
    _report(problems, f"overlay {overlay.name}")


@overlay_param
def test_resources_meet_the_kubernetes_schemas(overlay):
    """Protects `kubectl apply` from rejecting a resource: each built-in resource validates
    offline against the schemas of Kubernetes KUBERNETES_VERSION (1.30) in strict mode
    (unknown fields are errors, as with `kubectl apply --validate=strict`)."""
    problems = []
    for doc in rendered(overlay):
        if crd_group(doc):
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(map(str, error.path)) or "<root>"
            problems.append(f"{resource_name(doc)}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{resource_name(doc)}: {doc.get('apiVersion')} {doc.get('kind')} is neither in "
                            f"Kubernetes {KUBERNETES_VERSION} nor a CRD kept in tests/deploy/schemas")
    _report(problems, f"overlay {overlay.name} against Kubernetes {KUBERNETES_VERSION}")


@overlay_param
def test_custom_resources_meet_their_crd_schemas(overlay):
    """Protects the KEDA ScaledObject (and any other custom resource of a CRD kept in
    schemas/) from fields the operator's CRD does not have or values of the wrong type."""
    problems = []
    for doc in rendered(overlay):
        if crd_group(doc):
            problems += crd_errors(doc)
    _report(problems, f"overlay {overlay.name} against the CRD schemas")


def _pod_labels(docs) -> list[tuple[str, str | None, dict]]:
    return [(label, (doc.get("metadata") or {}).get("namespace"), (template.get("metadata") or {}).get("labels") or {})
            for doc in docs for label, template in pod_templates(doc)]


def _selects(selector: dict, labels: dict) -> bool:
    if not selector:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


@overlay_param
def test_references_between_resources_resolve(overlay):
    """Protects against names that kustomize did not rewrite or that were mistyped: each
    Service and PodDisruptionBudget selects some pod, each autoscaler targets a workload in
    the render, and each ConfigMap, Secret and PVC a pod uses is rendered too, each in the
    referrer's namespace."""
    docs = rendered(overlay)
    problems = []
    for doc in docs:
        kind, name = doc.get("kind"), resource_name(doc)
        # What this resource may refer to: the resources of its own namespace.
        names = {(other.get("kind"), (other.get("metadata") or {}).get("name")) for other in docs
                 if _namespace(other) == _namespace(doc)}
        pods = [pod for pod in _pod_labels(docs) if pod[1] == _namespace(doc)]
        spec = doc.get("spec") or {}
        if kind == "Service" and spec.get("selector"):
            if not any(_selects({"matchLabels": spec["selector"]}, labels) for _, _, labels in pods):
                problems.append(f"{name}: selector {spec['selector']} matches no pod template")
        if kind == "PodDisruptionBudget":
            if not any(_selects(spec.get("selector") or {}, labels) for _, _, labels in pods):
                problems.append(f"{name}: selector {spec.get('selector')} matches no pod template")
        if kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            target = spec.get("scaleTargetRef") or {}
            if (target.get("kind", "Deployment"), target.get("name")) not in names:
                problems.append(f"{name}: scaleTargetRef {target.get('kind', 'Deployment')}/{target.get('name')} "
                                "is not in the render")
        claim_templates = {(t.get("metadata") or {}).get("name") for t in spec.get("volumeClaimTemplates") or []}
        for label, template in pod_templates(doc):
            pod = template.get("spec") or {}
            for volume in pod.get("volumes") or []:
                for source, kind_, key in (("configMap", "ConfigMap", "name"), ("secret", "Secret", "secretName"),
                                           ("persistentVolumeClaim", "PersistentVolumeClaim", "claimName")):
                    ref = volume.get(source)
                    if ref and not ref.get("optional") and (kind_, ref.get(key)) not in names:
                        problems.append(f"{label}: volume {volume.get('name')} uses {kind_}/{ref.get(key)}, "
                                        "which is not in the render")
            for _, container in containers(pod):
                for mount in container.get("volumeMounts") or []:
                    if mount.get("name") not in {v.get("name") for v in pod.get("volumes") or []} | claim_templates:
                        problems.append(f"{label} container {container.get('name')}: volumeMount "
                                        f"{mount.get('name')} names no volume of the pod")
                refs = [(e.get("valueFrom") or {}) for e in container.get("env") or []]
                refs = [(r.get("secretKeyRef"), "Secret") for r in refs] + [(r.get("configMapKeyRef"), "ConfigMap")
                                                                            for r in refs]
                refs += [(e.get("secretRef"), "Secret") for e in container.get("envFrom") or []]
                refs += [(e.get("configMapRef"), "ConfigMap") for e in container.get("envFrom") or []]
                for ref, kind_ in refs:
                    if ref and not ref.get("optional") and (kind_, ref.get("name")) not in names:
                        problems.append(f"{label} container {container.get('name')}: uses {kind_}/{ref.get('name')}, "
                                        "which is not in the render")
    _report(problems, f"overlay {overlay.name}")


@overlay_param
def test_the_gateway_has_an_hpa_and_the_inferencer_a_keda_scaler_on_its_queue(overlay):
    """Protects the autoscaling the issue asks for: an HPA on the gateway and a KEDA
    ScaledObject on the inferencer Deployment driven by a Redis list's length."""
    docs = rendered(overlay)
    hpas = [d for d in docs if d.get("kind") == "HorizontalPodAutoscaler"
            and "gateway" in str((d.get("spec") or {}).get("scaleTargetRef", {}).get("name", ""))]
    assert hpas, f"{overlay.name}: no HorizontalPodAutoscaler targets a gateway Deployment"
    scalers = [d for d in docs if d.get("kind") == "ScaledObject"
               and "infer" in str((d.get("spec") or {}).get("scaleTargetRef", {}).get("name", ""))]
    assert scalers, f"{overlay.name}: no KEDA ScaledObject targets an inferencer Deployment"
    for scaler in scalers:
        triggers = (scaler.get("spec") or {}).get("triggers") or []
        redis = [t for t in triggers if t.get("type") == "redis" and (t.get("metadata") or {}).get("listName")]
        assert redis, (f"{overlay.name}: {resource_name(scaler)} has no `redis` trigger with metadata.listName "
                       f"(triggers: {triggers})")


# --- the AscendJob template ---------------------------------------------------------------------

def _template_docs() -> tuple[dict, ...]:
    if not ASCENDJOB_TEMPLATE.is_file():
        pytest.fail(f"{ASCENDJOB_TEMPLATE.relative_to(REPO_ROOT)} is missing", pytrace=False)
    return render_ascendjob()


def _ascendjob() -> dict:
    jobs = [doc for doc in _template_docs() if doc.get("kind") == "AscendJob"]
    assert len(jobs) == 1, f"trainer/ascendjob.yaml holds {len(jobs)} AscendJobs, not one"
    return jobs[0]


def test_the_ascendjob_template_meets_the_crd_and_kubernetes_schemas():
    """Protects multi-node training: what the trainer renders for `nodes > 1`
    (trainer/ascendjob.yaml as the trainer renders it, with sample values)
    is accepted: the AscendJob by the Ascend operator's CRD, unknown fields rejected, and
    any built-in resource beside it by the Kubernetes schemas."""
    _ascendjob()
    problems = []
    for doc in _template_docs():
        if crd_group(doc):
            problems += crd_errors(doc)
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{resource_name(doc)}: {'.'.join(map(str, error.path)) or '<root>'}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{resource_name(doc)}: no schema for {doc.get('apiVersion')} {doc.get('kind')}")
    _report(problems, "trainer/ascendjob.yaml")


def test_the_ascendjob_template_follows_the_operator_conventions():
    """Protects what Volcano and the Ascend operator check at admission but the CRD does not
    (the operator's ascendjob_validate.go, ../shared/ASCEND.md): scheduler `volcano`, label
    `framework: mindspore` and a `ring-controller.atlas: ascend-910*` label, MindSpore
    replica types only (Scheduler with one replica, and Worker), a container named `ascend`
    with an image in each, Ascend 910 cards on the workers."""
    job = _ascendjob()
    labels = (job.get("metadata") or {}).get("labels") or {}
    spec = job.get("spec") or {}
    problems = []
    if spec.get("schedulerName") != "volcano":
        problems.append(f"spec.schedulerName is {spec.get('schedulerName')!r}, not 'volcano'")
    if labels.get("framework") != "mindspore":
        problems.append(f"metadata.labels.framework is {labels.get('framework')!r}, not 'mindspore'")
    if not str(labels.get("ring-controller.atlas", "")).startswith("ascend-910"):
        problems.append(f"metadata.labels['ring-controller.atlas'] is {labels.get('ring-controller.atlas')!r}, "
                        "not ascend-910 or ascend-910b")
    replicas = spec.get("replicaSpecs") or {}
    if set(replicas) != {"Scheduler", "Worker"}:
        problems.append(f"spec.replicaSpecs has {sorted(replicas)}; MindSpore jobs have exactly Scheduler and Worker")
    if (replicas.get("Scheduler") or {}).get("replicas", 1) != 1:
        problems.append(f"replica Scheduler: replicas is {replicas['Scheduler'].get('replicas')}, must be 1")
    for replica, replica_spec in replicas.items():
        pod = ((replica_spec or {}).get("template") or {}).get("spec") or {}
        ascend = [c for c in pod.get("containers") or [] if c.get("name") == "ascend"]
        if not ascend or not ascend[0].get("image"):
            problems.append(f"replica {replica}: no container named 'ascend' with an image")
            continue
        limits = (ascend[0].get("resources") or {}).get("limits") or {}
        if replica == "Worker" and "huawei.com/Ascend910" not in limits:
            problems.append("replica Worker container ascend: no resources.limits['huawei.com/Ascend910']")
    _report(problems, "trainer/ascendjob.yaml")
