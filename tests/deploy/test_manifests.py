"""Offline checks of the Kubernetes manifests, the Compose file and the Dockerfile.

Each overlay is rendered with ``kubectl kustomize`` and every built-in kind is validated against
the Kubernetes 1.31 JSON schemas (strict: unknown fields fail) shipped by ``kubernetes_validate``.
KEDA ScaledObjects have no schema there, so ``scaled_object_problems`` checks them against the
topic registry. Every rule is a function returning the problems it finds; the ``*_catches_*``
tests break a copy of the rendered manifests to show that each rule can fail.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError
from parley_common import topics
from parley_common.broker import CONSUMER_DEFAULTS
from parley_common.settings import CommonSettings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
K8S_VERSION = "1.31.0"

Doc = dict[str, Any]

# Deployment -> the consumer groups its KEDA triggers must cover (docs/ARCHITECTURE.md, the services' group ids).
CONSUMER_GROUPS: dict[str, set[str]] = {
    "parley-router": {"parley-router"},
    "parley-sender": {"parley-sender", "parley-sender-windows"},
    "parley-billing": {"parley-billing"},
}
HTTP_PORTS = {"ingest": 8081, "router": 8082, "sender": 8083, "billing": 8084}
CPU_AUTOSCALED = {"parley-ingest"}
CRD_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication"),
             ("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
OPS_PORT = 9464  # /metrics and /docs, off the public face (PARLEY_<SERVICE>_OPS_PORT)
ALERTS = REPO / "deploy" / "observability" / "alerts"
# Secrets the user creates before applying (deploy/k8s/README.md); never rendered from the repo.
USER_SECRETS = {"parley-secrets", "parley-meta", "parley-kafka"}
# Services that call out to the internet (tenant endpoints; Meta's Graph API), on 443 only.
INTERNET_EGRESS = {"parley-router", "parley-sender", "parley-billing"}
NON_PUBLIC = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8",
                                                "169.254.0.0/16", "100.64.0.0/10", "fc00::/7", "fe80::/10")]
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
FASTSTREAM_GRACEFUL_TIMEOUT_S = 15
SECRETISH_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|DATABASE_URL|REDACTION_KEY|API_KEY", re.I)


# --- rendering ------------------------------------------------------------------------------------


@functools.cache
def _kustomize(overlay: Path) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is needed to render the Kustomize overlays (kubectl kustomize)")
    proc = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {overlay} failed:\n{proc.stderr}"
    return proc.stdout


def render(overlay: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(_kustomize(overlay)) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    return request.param, render(K8S / "overlays" / request.param)


@pytest.fixture(scope="module")
def by_overlay() -> dict[str, list[Doc]]:
    return {o: render(K8S / "overlays" / o) for o in OVERLAYS}


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(manifest, pod spec) of every Deployment and Job."""
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            yield d, d["spec"]["template"]["spec"]


def containers(pod: Doc) -> list[Doc]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def config_value(docs: list[Doc], key: str) -> str:
    (cm,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("parley-config")]
    return str(cm["data"][key])


# --- the rules --------------------------------------------------------------------------------------


def schema_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for d in docs:
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(map(str, exc.path))
            problems.append(f"{d['kind']}/{d['metadata']['name']}: {path}: {exc.message}")
        except SchemaNotFoundError:
            if (d["apiVersion"], d["kind"]) not in CRD_KINDS:
                problems.append(f"{d['apiVersion']} {d['kind']}: no Kubernetes {K8S_VERSION} schema")
    return problems


def scaled_object_problems(docs: list[Doc]) -> list[str]:
    """KEDA's kafka scaler: required fields, string metadata, real groups and topics, partition caps."""
    problems: list[str] = []
    deployments = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    bootstrap = config_value(docs, "PARLEY_KAFKA_BOOTSTRAP")
    for so in of_kind(docs, "ScaledObject"):
        name = so["metadata"]["name"]
        spec = so.get("spec", {})
        if so["apiVersion"] != "keda.sh/v1alpha1":
            problems.append(f"{name}: apiVersion {so['apiVersion']}")
        target = spec.get("scaleTargetRef", {}).get("name")
        if target not in deployments:
            problems.append(f"{name}: scaleTargetRef.name {target!r} is not a Deployment")
        lo, hi = spec.get("minReplicaCount"), spec.get("maxReplicaCount")
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi and hi >= 1):
            problems.append(f"{name}: replica counts min={lo!r} max={hi!r}")
            continue
        triggers = spec.get("triggers") or []
        if not triggers:
            problems.append(f"{name}: no triggers")
        groups = set()
        for i, t in enumerate(triggers):
            where = f"{name}.triggers[{i}]"
            if t.get("type") != "kafka":
                problems.append(f"{where}: type {t.get('type')!r}, expected kafka")
                continue
            meta = t.get("metadata") or {}
            for key, value in meta.items():
                if not isinstance(value, str):
                    problems.append(f"{where}.metadata.{key}: {value!r} is "
                                    f"{type(value).__name__}, not a string")
            for key in ("bootstrapServers", "consumerGroup", "topic", "lagThreshold"):
                if not meta.get(key):
                    problems.append(f"{where}: metadata.{key} is missing")
            if meta.get("bootstrapServers") and meta["bootstrapServers"] != bootstrap:
                problems.append(f"{where}: bootstrapServers {meta['bootstrapServers']!r} is not the "
                                f"services' PARLEY_KAFKA_BOOTSTRAP {bootstrap!r}")
            reset = meta.get("offsetResetPolicy", "latest")  # KEDA's default
            if reset != CONSUMER_DEFAULTS["auto_offset_reset"]:
                problems.append(f"{where}: offsetResetPolicy {reset!r} differs from the consumers' "
                                f"auto_offset_reset {CONSUMER_DEFAULTS['auto_offset_reset']!r}")
            lag = str(meta.get("lagThreshold", ""))
            if not lag.isdigit() or int(lag) < 1:
                problems.append(f"{where}: lagThreshold {lag!r} is not a positive integer")
            groups.add(meta.get("consumerGroup"))
            topic = next((tp for tp in topics.ALL_TOPICS if tp.base == meta.get("topic")), None)
            if topic is None:
                problems.append(f"{where}: topic {meta.get('topic')!r} is not in parley_common.topics")
            elif hi > topic.partitions:
                problems.append(f"{where}: maxReplicaCount {hi} exceeds the {topic.partitions} "
                                f"partitions of {topic.base}")
        expected = CONSUMER_GROUPS.get(str(target))
        if expected is None:
            problems.append(f"{name}: {target} is not a Kafka consumer service")
        elif groups != expected:
            problems.append(f"{name}: consumer groups {sorted(map(str, groups))}, "
                            f"expected {sorted(expected)}")
    return problems


def autoscaling_problems(docs: list[Doc]) -> list[str]:
    """Exactly one autoscaler per Deployment: KEDA (which owns its own HPA) or an HPA, never both."""
    problems = []
    hpa_targets = [h["spec"]["scaleTargetRef"]["name"] for h in of_kind(docs, "HorizontalPodAutoscaler")]
    keda_targets = [s["spec"]["scaleTargetRef"]["name"] for s in of_kind(docs, "ScaledObject")]
    deployments = of_kind(docs, "Deployment")
    names = {d["metadata"]["name"] for d in deployments}
    for target in set(hpa_targets) | set(keda_targets):
        if target not in names:
            problems.append(f"an autoscaler targets {target!r}, which is not a Deployment")
    for d in deployments:
        name = d["metadata"]["name"]
        n_hpa, n_keda = hpa_targets.count(name), keda_targets.count(name)
        if n_hpa + n_keda != 1:
            problems.append(f"{name}: {n_hpa} HPA(s) and {n_keda} ScaledObject(s); expected exactly one")
        if "replicas" in d["spec"]:
            problems.append(f"{name}: spec.replicas is set but an autoscaler owns the replica count")
    for h in of_kind(docs, "HorizontalPodAutoscaler"):
        if h["spec"]["scaleTargetRef"]["name"] not in CPU_AUTOSCALED:
            problems.append(f"HPA {h['metadata']['name']}: consumers scale on lag (KEDA), not CPU")
    return problems


def probe_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for d in of_kind(docs, "Deployment"):
        pod = d["spec"]["template"]["spec"]
        grace = pod.get("terminationGracePeriodSeconds", 30)
        for c in pod["containers"]:
            where = f"{d['metadata']['name']}/{c['name']}"
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            paths = {}
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                get = (c.get(kind) or {}).get("httpGet")
                if get is None:
                    if kind != "startupProbe":
                        problems.append(f"{where}: no HTTP {kind}")
                    continue
                paths[kind] = get["path"]
                if get["port"] not in ports and get["port"] not in ports.values():
                    problems.append(f"{where}: {kind} port {get['port']!r} is not a container port")
            for kind in ("livenessProbe", "startupProbe"):
                # Liveness must never depend on Kafka: /readyz does.
                if kind in paths and paths[kind] != "/healthz":
                    problems.append(f"{where}: {kind} checks {paths[kind]}, must be /healthz")
            if paths.get("readinessProbe") != "/readyz":
                problems.append(f"{where}: readiness checks {paths.get('readinessProbe')}, must be /readyz")
            pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
            if grace <= FASTSTREAM_GRACEFUL_TIMEOUT_S + pre_stop:
                problems.append(f"{where}: terminationGracePeriodSeconds {grace} leaves no room for "
                                f"preStop {pre_stop} s + FastStream's {FASTSTREAM_GRACEFUL_TIMEOUT_S} s")
    return problems


def service_wiring_problems(docs: list[Doc]) -> list[str]:
    """Each service runs `parley-<svc> run`, binds 0.0.0.0 on its port, and its Service reaches it."""
    problems = []
    for d in of_kind(docs, "Deployment"):
        name = d["metadata"]["name"]
        svc = name.removeprefix("parley-")
        (c,) = d["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        cmd = [*c.get("command", []), *c.get("args", [])]
        if cmd != [f"parley-{svc}", "run"]:
            problems.append(f"{name}: command {cmd}")
        port = HTTP_PORTS.get(svc)
        if env.get(f"PARLEY_{svc.upper()}_HTTP_PORT") != str(port):
            problems.append(f"{name}: PARLEY_{svc.upper()}_HTTP_PORT is not {port}")
        if env.get(f"PARLEY_{svc.upper()}_HTTP_HOST") != "0.0.0.0":
            problems.append(f"{name}: does not bind 0.0.0.0 (the default is 127.0.0.1)")
        if [p["containerPort"] for p in c.get("ports", [])] != [port, OPS_PORT]:
            problems.append(f"{name}: container ports are not [{port}, {OPS_PORT}]")
        labels = d["spec"]["template"]["metadata"]["labels"]
        services = [s for s in of_kind(docs, "Service")
                    if s["spec"]["selector"].items() <= labels.items()]
        if len(services) != 1:
            problems.append(f"{name}: {len(services)} Services select its pods")
        for s in services:
            for p in s["spec"]["ports"]:
                if p["targetPort"] not in {cp.get("name") for cp in c["ports"]} | {port}:
                    problems.append(f"Service {s['metadata']['name']}: targetPort {p['targetPort']!r}")
    return problems


def pdb_problems(docs: list[Doc]) -> list[str]:
    problems = []
    pdbs = of_kind(docs, "PodDisruptionBudget")
    for p in pdbs:
        if p["apiVersion"] != "policy/v1":
            problems.append(f"PDB {p['metadata']['name']}: {p['apiVersion']}")
        if "maxUnavailable" not in p["spec"] and "minAvailable" not in p["spec"]:
            problems.append(f"PDB {p['metadata']['name']}: neither maxUnavailable nor minAvailable")
    for d in of_kind(docs, "Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        if len(covering) != 1:
            problems.append(f"{d['metadata']['name']}: {len(covering)} PodDisruptionBudgets select its pods")
    return problems


def security_problems(docs: list[Doc]) -> list[str]:
    """Non-root, read-only root filesystem, no privilege escalation, every capability dropped."""
    problems = []
    for w, pod in workloads(docs):
        psc = pod.get("securityContext") or {}
        for c in containers(pod):
            where = f"{w['kind']}/{w['metadata']['name']}/{c['name']}"
            sc = c.get("securityContext") or {}
            if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
                problems.append(f"{where}: runAsNonRoot is not true")
            if sc.get("runAsUser", psc.get("runAsUser")) in (None, 0):
                problems.append(f"{where}: runAsUser is unset or 0")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem is writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
                problems.append(f"{where}: capabilities do not drop ALL")
            if (sc.get("capabilities") or {}).get("add"):
                problems.append(f"{where}: adds capabilities")
    return problems


def resource_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for w, pod in workloads(docs):
        for c in containers(pod):
            r = c.get("resources") or {}
            for need in ("requests.cpu", "requests.memory", "limits.memory"):
                section, key = need.split(".")
                if key not in (r.get(section) or {}):
                    problems.append(f"{w['metadata']['name']}/{c['name']}: no {need}")
    return problems


def _allowed_ports(rules: list[Doc]) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), int(p["port"])) for r in rules for p in r.get("ports", [])}


def network_policy_problems(docs: list[Doc]) -> list[str]:
    """One NetworkPolicy per service, ingress only on its HTTP port (and its ops port, from inside the
    cluster, for Prometheus), egress only to what it uses:
    DNS, Kafka, PostgreSQL, and (router, sender and billing only) 443 on public addresses."""
    problems: list[str] = []
    policies = of_kind(docs, "NetworkPolicy")
    kafka_port = int(config_value(docs, "PARLEY_KAFKA_BOOTSTRAP").rsplit(":", 1)[1])
    for dep in of_kind(docs, "Deployment"):
        name = dep["metadata"]["name"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        selecting = [p for p in policies
                     if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()]
        if len(selecting) != 1:
            problems.append(f"{name}: selected by {len(selecting)} NetworkPolicies, expected 1")
            continue
        spec = selecting[0]["spec"]
        if set(spec.get("policyTypes", [])) != {"Ingress", "Egress"}:
            problems.append(f"{name}: policyTypes {spec.get('policyTypes')}, expected Ingress and Egress")
        port = HTTP_PORTS[name.removeprefix("parley-")]
        if _allowed_ports(spec.get("ingress", [])) != {("TCP", port), ("TCP", OPS_PORT)}:
            problems.append(f"{name}: ingress ports {sorted(_allowed_ports(spec.get('ingress', [])))}, "
                            f"expected only TCP {port} and the ops port {OPS_PORT}")
        for rule in spec.get("ingress", []):
            if ("TCP", OPS_PORT) in _allowed_ports([rule]) and not rule.get("from"):
                problems.append(f"{name}: the ops port is open to any source, not only the cluster")
        egress = spec.get("egress", [])
        allowed = _allowed_ports(egress)
        for needed in (("UDP", 53), ("TCP", kafka_port), ("TCP", 5432)):
            if needed not in allowed:
                problems.append(f"{name}: egress to {needed[0]} {needed[1]} is not allowed")
        for rule in egress:
            if not rule.get("ports"):
                problems.append(f"{name}: an egress rule allows every port")
            for peer in rule.get("to", []):
                block = peer.get("ipBlock")
                if block is None:
                    continue
                if name not in INTERNET_EGRESS:
                    problems.append(f"{name}: egress to {block['cidr']} (only {sorted(INTERNET_EGRESS)} reach "
                                    "the internet)")
                if _allowed_ports([rule]) != {("TCP", 443)}:
                    problems.append(f"{name}: internet egress on {sorted(_allowed_ports([rule]))}, expected TCP 443")
                cidr = ipaddress.ip_network(block["cidr"])
                excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
                for private in NON_PUBLIC:
                    if private.version == cidr.version and private.subnet_of(cidr) and not any(
                            private.subnet_of(e) for e in excepted if e.version == private.version):
                        problems.append(f"{name}: egress to {block['cidr']} includes {private}")
    return problems


def kafka_transport_problems(docs: list[Doc]) -> list[str]:
    """The services' Kafka settings are valid, every file they name is mounted from a Secret, and
    KEDA's triggers authenticate the same way."""
    problems: list[str] = []
    (cm,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("parley-config")]
    kafka_env = {k: str(v) for k, v in cm["data"].items() if k.startswith("PARLEY_KAFKA_")}
    try:
        settings = CommonSettings.model_validate({k.removeprefix("PARLEY_").lower(): v for k, v in kafka_env.items()})
    except ValueError as exc:
        return [f"parley-config: Kafka settings do not validate: {exc}"]
    files = [v for k, v in kafka_env.items() if k.endswith(("_FILE", "_CAFILE", "_CERTFILE", "_KEYFILE"))]
    for w, pod in workloads(docs):
        uses_kafka = w["kind"] == "Deployment" or w["metadata"]["name"] == "parley-topics"
        if not uses_kafka:
            continue
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            mounts = [(m["mountPath"].rstrip("/") + "/", volumes.get(m["name"], {})) for m in c.get("volumeMounts", [])]
            for f in files:
                source = next((v for path, v in mounts if f.startswith(path)), None)
                if source is None or "secret" not in source:
                    problems.append(f"{w['metadata']['name']}/{c['name']}: {f} is not mounted from a Secret")
    auths = {a["metadata"]["name"]: a for a in of_kind(docs, "TriggerAuthentication")}
    sasl = settings.kafka_security_protocol.startswith("SASL_")
    tls = settings.kafka_security_protocol in ("SSL", "SASL_SSL")
    for so in of_kind(docs, "ScaledObject"):
        for i, t in enumerate(so["spec"].get("triggers", [])):
            where = f"{so['metadata']['name']}.triggers[{i}]"
            meta = t.get("metadata", {})
            want_sasl = KEDA_SASL[settings.kafka_sasl_mechanism or ""] if sasl else None
            if meta.get("sasl", "none") != (want_sasl or "none"):
                problems.append(f"{where}: sasl {meta.get('sasl')!r}, the services use {want_sasl or 'none'!r}")
            if (meta.get("tls") == "enable") != tls:
                problems.append(f"{where}: tls {meta.get('tls')!r}, the services use "
                                f"{settings.kafka_security_protocol}")
            ref = (t.get("authenticationRef") or {}).get("name")
            if sasl or tls:
                params = {r["parameter"] for r in auths.get(str(ref), {}).get("spec", {}).get("secretTargetRef", [])}
                needed = ({"username", "password"} if sasl else set()) | ({"ca"} if tls else set())
                if not needed <= params:
                    problems.append(f"{where}: authenticationRef {ref!r} lacks {sorted(needed - params)}")
    return problems


def secret_problems(docs: list[Doc]) -> list[str]:
    """No secret value in the manifests: Secrets come from the user; settings carry no credentials."""
    problems = []
    for s in of_kind(docs, "Secret"):
        if s.get("data") or s.get("stringData"):
            problems.append(f"Secret {s['metadata']['name']} carries literal data")
    for cm in of_kind(docs, "ConfigMap"):
        for key, value in (cm.get("data") or {}).items():
            is_path = key.endswith("_FILE") and str(value).startswith("/")  # where a secret is mounted
            if (SECRETISH_KEY.search(key) and not is_path) or re.search(r"://[^/@\s]+:[^/@\s]+@", str(value)):
                problems.append(f"ConfigMap {cm['metadata']['name']}: {key} looks like a secret")
    for w, pod in workloads(docs):
        for c in containers(pod):
            where = f"{w['metadata']['name']}/{c['name']}"
            for e in c.get("env", []):
                if SECRETISH_KEY.search(e["name"]) and "value" in e:
                    problems.append(f"{where}: {e['name']} has a literal value")
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["name"] not in USER_SECRETS:
                    problems.append(f"{where}: secretKeyRef to undocumented Secret {ref['name']}")
        for v in pod.get("volumes", []):
            if "secret" in v and v["secret"]["secretName"] not in USER_SECRETS:
                problems.append(f"{w['metadata']['name']}: volume from undocumented Secret "
                                f"{v['secret']['secretName']}")
    return problems


def monitoring_problems(docs: list[Doc]) -> list[str]:
    """Prometheus Operator resources: one PodMonitor scraping every service's ops port (which no
    Service exposes), the job named by the pod's name label, and one PrometheusRule carrying exactly
    the groups of deploy/observability/alerts/*.yaml."""
    problems: list[str] = []
    monitors = of_kind(docs, "PodMonitor")
    if len(monitors) != 1:
        return [f"{len(monitors)} PodMonitors (want 1)"]
    (pm,) = monitors
    spec = pm["spec"]
    selector = spec.get("selector", {})
    endpoints = spec.get("podMetricsEndpoints", [])
    if [(e.get("port"), e.get("path")) for e in endpoints] != [("ops", "/metrics")]:
        problems.append(f"PodMonitor endpoints {endpoints}")
    for d in of_kind(docs, "Deployment"):
        name = d["metadata"]["name"]
        svc = name.removeprefix("parley-")
        labels = d["spec"]["template"]["metadata"]["labels"]
        selected = selector.get("matchLabels", {}).items() <= labels.items() and all(
            (e["operator"] == "In" and labels.get(e["key"]) in e["values"])
            or (e["operator"] == "Exists" and e["key"] in labels)
            for e in selector.get("matchExpressions", []))
        if not selected:
            problems.append(f"{name}: not selected by the PodMonitor")
        if labels.get(spec.get("jobLabel", "")) != name:
            problems.append(f"{name}: the PodMonitor's jobLabel does not give job={name}")
        (c,) = d["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        ops = [p for p in c.get("ports", []) if p.get("name") == "ops"]
        if [p["containerPort"] for p in ops] != [OPS_PORT]:
            problems.append(f"{name}: no ops port {OPS_PORT}")
        if env.get(f"PARLEY_{svc.upper()}_OPS_PORT") != str(OPS_PORT) or \
                env.get(f"PARLEY_{svc.upper()}_OPS_HOST") != "0.0.0.0":
            problems.append(f"{name}: PARLEY_{svc.upper()}_OPS_PORT/_OPS_HOST do not serve {OPS_PORT} on 0.0.0.0")
    for svc_doc in of_kind(docs, "Service"):
        for p in svc_doc["spec"]["ports"]:
            if p.get("targetPort") in ("ops", OPS_PORT) or p.get("port") == OPS_PORT:
                problems.append(f"Service {svc_doc['metadata']['name']} exposes the ops port")
    rules = of_kind(docs, "PrometheusRule")
    groups = [g for path in sorted(ALERTS.glob("*.yaml")) for g in yaml.safe_load(path.read_text())["groups"]]
    if len(rules) != 1 or rules[0]["spec"].get("groups") != groups:
        problems.append("the PrometheusRule does not carry exactly the groups of deploy/observability/alerts")
    return problems


# --- the rendered overlays ---------------------------------------------------------------------------


def test_every_builtin_kind_validates_against_kubernetes_1_31_strict(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "Job", "HorizontalPodAutoscaler",
            "ScaledObject", "ConfigMap"} <= kinds
    assert schema_problems(docs) == []


def test_one_deployment_per_service(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    assert {d["metadata"]["name"] for d in of_kind(docs, "Deployment")} == {
        f"parley-{s}" for s in HTTP_PORTS}


def test_keda_scaled_objects_match_consumer_groups_and_partitions(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    targets = {s["spec"]["scaleTargetRef"]["name"] for s in of_kind(docs, "ScaledObject")}
    assert targets == set(CONSUMER_GROUPS)
    assert scaled_object_problems(docs) == []


def test_each_deployment_has_exactly_one_autoscaler(rendered: tuple[str, list[Doc]]) -> None:
    assert autoscaling_problems(rendered[1]) == []


def test_probes_liveness_never_checks_kafka_and_shutdown_is_graceful(rendered: tuple[str, list[Doc]]) -> None:
    assert probe_problems(rendered[1]) == []


def test_services_run_their_command_and_are_reachable(rendered: tuple[str, list[Doc]]) -> None:
    assert service_wiring_problems(rendered[1]) == []


def test_prometheus_scrapes_every_service_off_its_public_face_and_gets_the_alerts(
        rendered: tuple[str, list[Doc]]) -> None:
    assert monitoring_problems(rendered[1]) == []


def test_every_deployment_has_a_pod_disruption_budget(rendered: tuple[str, list[Doc]]) -> None:
    assert pdb_problems(rendered[1]) == []


def test_every_container_is_non_root_read_only_without_capabilities(rendered: tuple[str, list[Doc]]) -> None:
    assert security_problems(rendered[1]) == []


def test_every_container_has_resources(rendered: tuple[str, list[Doc]]) -> None:
    assert resource_problems(rendered[1]) == []


def test_every_service_has_its_own_network_policy(rendered: tuple[str, list[Doc]]) -> None:
    assert network_policy_problems(rendered[1]) == []


def test_kafka_transport_settings_are_valid_mounted_and_shared_with_keda(rendered: tuple[str, list[Doc]]) -> None:
    assert kafka_transport_problems(rendered[1]) == []


def test_prod_talks_to_kafka_over_tls_with_scram_and_dev_in_plaintext(by_overlay: dict[str, list[Doc]]) -> None:
    assert config_value(by_overlay["prod"], "PARLEY_KAFKA_SECURITY_PROTOCOL") == "SASL_SSL"
    assert config_value(by_overlay["prod"], "PARLEY_KAFKA_SASL_MECHANISM") == "SCRAM-SHA-512"
    assert config_value(by_overlay["dev"], "PARLEY_KAFKA_SECURITY_PROTOCOL") == "PLAINTEXT"
    assert {so["spec"]["triggers"][0]["authenticationRef"]["name"]
            for so in of_kind(by_overlay["prod"], "ScaledObject")} == {"parley-kafka"}


def test_no_secret_values_are_rendered(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    assert secret_problems(docs) == []
    assert of_kind(docs, "Secret") == [], "Secrets are created by the user (deploy/k8s/README.md)"


def test_no_secret_manifest_with_data_anywhere_under_deploy_k8s() -> None:
    files = [*K8S.rglob("*.yaml"), *K8S.rglob("*.yml")]
    assert files
    for f in files:
        docs = [d for d in yaml.safe_load_all(f.read_text()) if isinstance(d, dict)]
        assert secret_problems([d for d in docs if d.get("kind") == "Secret"]) == [], f


def test_migration_and_topic_jobs(by_overlay: dict[str, list[Doc]]) -> None:
    for overlay, docs in by_overlay.items():
        migrate = named(docs, "Job", "parley-migrate")["spec"]["template"]["spec"]["containers"][0]
        assert [*migrate["command"], *migrate.get("args", [])] == ["parley-tenants", "migrate"], overlay
        topics_job = named(docs, "Job", "parley-topics")["spec"]["template"]["spec"]["containers"][0]
        cmd = [*topics_job["command"], *topics_job.get("args", [])]
        assert cmd[:2] == ["parley-topics", "create"], overlay
        rf = int(cmd[cmd.index("--replication-factor") + 1])
        assert rf == (3 if overlay == "prod" else 1), (overlay, rf)


def _min_replicas(docs: list[Doc]) -> dict[str, int]:
    out = {h["spec"]["scaleTargetRef"]["name"]: h["spec"]["minReplicas"]
           for h in of_kind(docs, "HorizontalPodAutoscaler")}
    out |= {s["spec"]["scaleTargetRef"]["name"]: s["spec"]["minReplicaCount"]
            for s in of_kind(docs, "ScaledObject")}
    return out


def _memory_mi(q: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    unit = next(u for u in sorted(units, key=len, reverse=True) if q.endswith(u))
    return float(q.removesuffix(unit)) * units[unit]


def test_prod_runs_more_replicas_with_more_resources_than_dev(by_overlay: dict[str, list[Doc]]) -> None:
    dev, prod = by_overlay["dev"], by_overlay["prod"]
    dev_min, prod_min = _min_replicas(dev), _min_replicas(prod)
    assert dev_min.keys() == prod_min.keys()
    for name in prod_min:
        assert prod_min[name] > dev_min[name] and prod_min[name] >= 2, name
    for d in of_kind(prod, "Deployment"):
        name = d["metadata"]["name"]
        p = d["spec"]["template"]["spec"]["containers"][0]["resources"]
        q = named(dev, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert _memory_mi(p["requests"]["memory"]) >= _memory_mi(q["requests"]["memory"]), name
        assert _memory_mi(p["limits"]["memory"]) > _memory_mi(q["limits"]["memory"]), name


def test_overlays_use_their_own_namespace_and_kafka(by_overlay: dict[str, list[Doc]]) -> None:
    for overlay, docs in by_overlay.items():
        (ns,) = of_kind(docs, "Namespace")
        name = ns["metadata"]["name"]
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        for d in docs:
            if d["kind"] != "Namespace":
                assert d["metadata"].get("namespace") == name, (overlay, d["kind"], d["metadata"]["name"])
    assert config_value(by_overlay["dev"], "PARLEY_KAFKA_BOOTSTRAP") != config_value(
        by_overlay["prod"], "PARLEY_KAFKA_BOOTSTRAP")


# --- the rules can fail ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prod(by_overlay: dict[str, list[Doc]]) -> list[Doc]:
    return by_overlay["prod"]


def _broken(docs: list[Doc], kind: str, name: str) -> tuple[list[Doc], Doc]:
    copied = copy.deepcopy(docs)
    return copied, named(copied, kind, name)


def test_schema_check_catches_a_wrong_type_and_an_unknown_field(prod: list[Doc]) -> None:
    docs, pdb = _broken(prod, "PodDisruptionBudget", "parley-router")
    pdb["spec"]["maxUnavailable"] = [1]
    docs2, dep = _broken(prod, "Deployment", "parley-sender")
    dep["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    assert any("maxUnavailable" in p for p in schema_problems(docs))
    assert any("livenessProbes" in p for p in schema_problems(docs2))


@pytest.mark.parametrize(("breakage", "expected"), [
    (lambda so: so["spec"]["triggers"][0]["metadata"].update(lagThreshold=100), "not a string"),
    (lambda so: so["spec"]["triggers"][0]["metadata"].update(consumerGroup="sender"), "consumer groups"),
    (lambda so: so["spec"].update(maxReplicaCount=13), "exceeds the 12 partitions"),
    (lambda so: so["spec"]["triggers"][0]["metadata"].update(topic="wa.messages.outbound"),
     "not in parley_common"),
    (lambda so: so["spec"]["triggers"][0]["metadata"].pop("topic"), "metadata.topic is missing"),
    (lambda so: so["spec"]["triggers"][1]["metadata"].update(bootstrapServers="localhost:9092"),
     "bootstrapServers"),
    (lambda so: so["spec"]["scaleTargetRef"].update(name="parley-sendr"), "is not a Deployment"),
    (lambda so: so["spec"]["triggers"][0]["metadata"].pop("offsetResetPolicy"), "offsetResetPolicy"),
])
def test_scaled_object_check_catches(prod: list[Doc], breakage: Any, expected: str) -> None:
    docs, so = _broken(prod, "ScaledObject", "parley-sender")
    breakage(so)
    assert any(expected in p for p in scaled_object_problems(docs)), scaled_object_problems(docs)


def test_autoscaling_check_catches_an_hpa_next_to_keda(prod: list[Doc]) -> None:
    docs = copy.deepcopy(prod)
    hpa = copy.deepcopy(named(docs, "HorizontalPodAutoscaler", "parley-ingest"))
    hpa["metadata"]["name"] = hpa["spec"]["scaleTargetRef"]["name"] = "parley-router"
    docs.append(hpa)
    assert any("1 HPA(s) and 1 ScaledObject(s)" in p for p in autoscaling_problems(docs))
    docs, dep = _broken(prod, "Deployment", "parley-billing")
    dep["spec"]["replicas"] = 2
    assert any("spec.replicas" in p for p in autoscaling_problems(docs))


def test_probe_check_catches_liveness_on_readyz_and_a_short_grace_period(prod: list[Doc]) -> None:
    docs, dep = _broken(prod, "Deployment", "parley-router")
    dep["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"] = "/readyz"
    assert any("livenessProbe checks /readyz" in p for p in probe_problems(docs))
    docs, dep = _broken(prod, "Deployment", "parley-ingest")
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 15
    assert any("terminationGracePeriodSeconds" in p for p in probe_problems(docs))


def test_security_check_catches_root_and_writable_root_fs(prod: list[Doc]) -> None:
    docs, job = _broken(prod, "Job", "parley-topics")
    job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    problems = security_problems(docs)
    assert any("runAsUser is unset or 0" in p for p in problems)
    assert any("root filesystem is writable" in p for p in problems)


def test_secret_check_catches_literal_data_and_inline_credentials(prod: list[Doc]) -> None:
    docs = copy.deepcopy(prod)
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "parley-secrets"},
                 "stringData": {"database-url": "postgresql://parley:hunter2@db/parley"}})
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    cm["data"]["PARLEY_DATABASE_URL"] = "postgresql://parley:hunter2@db/parley"
    dep = named(docs, "Deployment", "parley-sender")
    dep["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "PARLEY_REDACTION_KEY", "value": "abc"})
    problems = secret_problems(docs)
    assert any("carries literal data" in p for p in problems)
    assert any("PARLEY_DATABASE_URL looks like a secret" in p for p in problems)
    assert any("PARLEY_REDACTION_KEY has a literal value" in p for p in problems)


def test_network_policy_check_catches_open_ports_private_egress_and_a_missing_policy(prod: list[Doc]) -> None:
    docs, np = _broken(prod, "NetworkPolicy", "parley-router")
    np["spec"]["egress"][-1]["to"][0]["ipBlock"]["except"].remove("169.254.0.0/16")  # cloud metadata
    np["spec"]["ingress"][0]["ports"].append({"protocol": "TCP", "port": 22})
    problems = network_policy_problems(docs)
    assert any("includes 169.254.0.0/16" in p for p in problems), problems
    assert any("expected only TCP 8082" in p for p in problems), problems
    docs, np = _broken(prod, "NetworkPolicy", "parley-ingest")
    np["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]})
    assert any("parley-ingest: egress to 0.0.0.0/0" in p for p in network_policy_problems(docs))
    docs = [d for d in copy.deepcopy(prod) if not (d["kind"] == "NetworkPolicy"
                                                   and d["metadata"]["name"] == "parley-ingest")]
    assert any("parley-ingest: selected by 0" in p for p in network_policy_problems(docs))


def test_kafka_transport_check_catches_unmounted_files_and_keda_without_credentials(prod: list[Doc]) -> None:
    docs, dep = _broken(prod, "Deployment", "parley-sender")
    dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        m for m in dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        if m["name"] != "kafka-credentials"]
    assert any("parley-sender/sender: /etc/parley/kafka/ca.crt is not mounted" in p
               for p in kafka_transport_problems(docs))
    docs, so = _broken(prod, "ScaledObject", "parley-billing")
    del so["spec"]["triggers"][0]["authenticationRef"]
    so["spec"]["triggers"][1]["metadata"]["sasl"] = "plaintext"
    problems = kafka_transport_problems(docs)
    assert any("authenticationRef None lacks" in p for p in problems), problems
    assert any("sasl 'plaintext'" in p for p in problems), problems
    docs = copy.deepcopy(prod)
    next(d for d in docs if d["kind"] == "ConfigMap")["data"].pop("PARLEY_KAFKA_SASL_MECHANISM")
    assert any("needs PARLEY_KAFKA_SASL_MECHANISM" in p for p in kafka_transport_problems(docs))


def test_pdb_and_wiring_checks_catch_a_missing_budget_and_a_wrong_port(prod: list[Doc]) -> None:
    docs = [d for d in copy.deepcopy(prod)
            if not (d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "parley-billing")]
    assert any("parley-billing: 0 PodDisruptionBudgets" in p for p in pdb_problems(docs))
    docs, dep = _broken(prod, "Deployment", "parley-sender")
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    next(e for e in env if e["name"] == "PARLEY_SENDER_HTTP_PORT")["value"] = "8080"
    assert any("PARLEY_SENDER_HTTP_PORT is not 8083" in p for p in service_wiring_problems(docs))


def test_monitoring_check_catches_a_missing_ops_port_an_exposed_one_and_a_stale_rule(prod: list[Doc]) -> None:
    docs, dep = _broken(prod, "Deployment", "parley-router")
    dep["spec"]["template"]["spec"]["containers"][0]["ports"].pop()
    assert any("parley-router: no ops port" in p for p in monitoring_problems(docs))
    docs, svc = _broken(prod, "Service", "parley-ingest")
    svc["spec"]["ports"].append({"name": "ops", "port": OPS_PORT, "targetPort": "ops"})
    assert any("parley-ingest exposes the ops port" in p for p in monitoring_problems(docs))
    docs, rule = _broken(prod, "PrometheusRule", "parley")
    rule["spec"]["groups"][0]["rules"].pop()
    assert any("PrometheusRule" in p for p in monitoring_problems(docs))


# --- Docker Compose and the Dockerfile ---------------------------------------------------------------

COMPOSE = REPO / "deploy" / "compose" / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
PARLEY_COMPOSE_SERVICES = {**HTTP_PORTS, "simulator": 8090}


@pytest.fixture(scope="module")
def compose() -> Doc:
    data = yaml.safe_load(COMPOSE.read_text())  # also resolves the x- anchors and << merges
    assert isinstance(data, dict)
    return data


def test_compose_has_kafka_kraft_postgres_services_and_simulator(compose: Doc) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "postgres", "topics", "migrate", *PARLEY_COMPOSE_SERVICES}
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft, no ZooKeeper
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"
    assert "kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert services["postgres"]["image"].startswith("postgres:")
    for infra in ("kafka", "postgres"):
        assert services[infra]["healthcheck"]["test"], infra


def test_compose_parley_services_build_the_one_image_and_run_their_command(compose: Doc) -> None:
    services = compose["services"]
    for name in (*PARLEY_COMPOSE_SERVICES, "topics", "migrate"):
        s = services[name]
        build = s["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE, name
        assert s["image"] == "parley:dev", name
        assert s["read_only"] is True and "ALL" in s["cap_drop"], name
        env = s["environment"]
        assert env["PARLEY_KAFKA_BOOTSTRAP"] == "kafka:9092", name
        assert "@postgres:5432/" in env["PARLEY_DATABASE_URL"], name
    for name, port in PARLEY_COMPOSE_SERVICES.items():
        s = services[name]
        assert s["command"][:2] == [f"parley-{name}", "run"], name
        assert s["environment"][f"PARLEY_{name.upper()}_HTTP_PORT"] == str(port)
        assert s["environment"][f"PARLEY_{name.upper()}_HTTP_HOST"] == "0.0.0.0"
        assert f"{port}:{port}" in s["ports"]
    assert services["topics"]["command"][:2] == ["parley-topics", "create"]
    assert services["migrate"]["command"] == ["parley-tenants", "migrate"]


def test_compose_dependencies_exist_and_host_ports_do_not_clash(compose: Doc) -> None:
    services = compose["services"]
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, s in services.items():
        for dep, spec in (s.get("depends_on") or {}).items():
            assert dep in services, (name, dep)
            assert spec["condition"] in conditions, (name, dep)
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], (name, dep)
    for name in HTTP_PORTS:
        deps = services[name]["depends_on"]
        assert deps["topics"]["condition"] == deps["migrate"]["condition"] == "service_completed_successfully"
    host_ports = [str(p).split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), host_ports
    for s in services.values():
        for v in s.get("volumes", []):
            source = str(v).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in (compose.get("volumes") or {}), source


def test_dockerfile_installs_the_locked_workspace_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    assert "uv sync --frozen --no-dev --all-packages" in text
    stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) >= 3 and "runtime" in stages  # multi-stage: uv, build, runtime
    runtime = text[text.index("AS runtime"):]
    user = re.findall(r"^USER\s+(\S+)", runtime, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert int(user[-1].split(":")[0]) == 10001  # the runAsUser of the Kubernetes manifests


def test_dockerfile_copies_every_workspace_member_manifest() -> None:
    """The dependency layer needs each member's pyproject.toml; a new service must be listed."""
    workspace = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
    members = sorted(str(p.relative_to(REPO)) for pattern in workspace for p in REPO.glob(pattern)
                     if (p / "pyproject.toml").exists())
    assert members
    copied = set(re.findall(r"^COPY\s+(\S+)/pyproject\.toml\s", DOCKERFILE.read_text(), re.M))
    assert set(members) <= copied, f"not copied: {sorted(set(members) - copied)}"
