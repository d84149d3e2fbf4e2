#!/usr/bin/env python3
"""Tests of the Helm chart in helm/latchkey, offline and without a cluster.

    python3 -m pip install -q -r helm/requirements.txt && python3 helm/test_chart.py

Helm itself comes from helm-python-sdk: its wheel bundles libhelm_c, Helm's Go
SDK built as a C library, so there is no helm binary and nothing is downloaded
at run time. The rendered manifests are checked against the Kubernetes
OpenAPI schemas that kubernetes-validate ships (strict: unknown fields fail).

Prints every check and ends with "N passed, N failed"; exits 1 on any failure.
"""

from __future__ import annotations

import base64
import copy
import json
import pathlib
import re
import sys
import traceback
import urllib.parse

import helm_python as helm
import kubernetes_validate
import yaml

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
CHART = HERE / "latchkey"
ALL_OPTIONS = HERE / "ci-values" / "all-options.yaml"
KUBE_VERSION = "1.33.0"
RELEASE, NAMESPACE = "lk", "auth"

# Custom resources kubernetes-validate has no schema for: checked field by field below.
NO_SCHEMA_KINDS = {
    "ServiceMonitor": "a Prometheus Operator CRD (monitoring.coreos.com/v1)",
    "HTTPRoute": "a Gateway API CRD (gateway.networking.k8s.io/v1)",
}
SECRET_ENVS = {"LATCHKEY_DATABASE_URL", "LATCHKEY_SMTP_URL", "LATCHKEY_KEY_ENCRYPTION_KEY"}
PUBLIC_PATHS = {"/auth", "/sessions", "/tokens", "/.well-known/jwks.json", "/tenants"}
INTERNAL_PATHS = ("/metrics", "/healthz", "/readyz", "/openapi.json")

passed: list[str] = []
failed: list[str] = []


def check(name: str, fn) -> None:
    """Runs one check; an AssertionError (or any error) fails it."""
    try:
        detail = fn()
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way
        detail = str(e) or traceback.format_exc(limit=2)
        failed.append(name)
        print(f"FAIL {name}\n     {detail.strip()}".replace("\n", "\n     "))
    else:
        passed.append(name)
        print(f"ok   {name}")
        if isinstance(detail, str) and detail:
            print(f"     {detail}")


# --------------------------------------------------------------------------
# Rendering


def load_values(path: pathlib.Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def render(values: dict | None = None) -> tuple[list[dict], str]:
    """The rendered objects and NOTES.txt for `values` (over the defaults)."""
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict] = []
    notes = ""
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert isinstance(doc, dict), f"{path}: not an object"
                docs.append(doc)
    return docs, notes


def render_error(values: dict) -> str:
    """The error message of a render that must fail."""
    try:
        render(values)
    except helm.HelmError as e:
        return str(e)
    raise AssertionError(f"rendering succeeded but should have failed with values {values}")


def only(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def kinds(docs: list[dict]) -> list[str]:
    return sorted(d["kind"] for d in docs)


# --------------------------------------------------------------------------
# Checks on one rendering


def validate_manifests(docs: list[dict]) -> None:
    unknown = []
    for doc in docs:
        kind = doc["kind"]
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if kind not in NO_SCHEMA_KINDS:
                unknown.append(f"{kind} ({doc['apiVersion']})")
                continue
            print(f"     skip schema of {kind}: {NO_SCHEMA_KINDS[kind]} has no schema in "
                  f"kubernetes-validate; its fields are asserted by this script instead")
        except kubernetes_validate.ValidationError as e:
            where = "/".join(str(p) for p in e.path)
            raise AssertionError(f"{kind} {doc['metadata']['name']}: {e.message} at {where}")
    assert not unknown, f"no schema for {unknown}"


def deployment_checks(docs: list[dict], values: dict) -> None:
    dep = only(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": 50051, "http": 8080, "metrics": 9464}, ports

    # Probes: grpc.health.v1 on the port named grpc.
    for probe, service in (("startupProbe", "liveness"), ("livenessProbe", "liveness"),
                           ("readinessProbe", "")):
        p = c.get(probe)
        assert p and "grpc" in p, f"{probe} is not a gRPC probe: {p}"
        assert set(p) - {"grpc"} <= {"periodSeconds", "timeoutSeconds", "failureThreshold",
                                     "successThreshold", "initialDelaySeconds"}, p
        assert p["grpc"]["port"] == ports["grpc"] == 50051, f"{probe} port {p['grpc']['port']}"
        assert p["grpc"].get("service") == service, \
            f"{probe} asks service {p['grpc'].get('service')!r}, expected {service!r}"

    # Shutdown: the pod's grace outlasts delay + grace + 3 s background stop + 5 s flush.
    cm = only(docs, "ConfigMap")["data"]
    delay = int(cm["LATCHKEY_SHUTDOWN_DELAY"].rstrip("s"))
    grace = int(cm["LATCHKEY_SHUTDOWN_GRACE"].rstrip("s"))
    assert pod["terminationGracePeriodSeconds"] > delay + grace + 8, \
        (pod["terminationGracePeriodSeconds"], delay, grace)

    # Security contexts.
    psc, csc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532, psc
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, psc
    assert csc["runAsNonRoot"] is True and csc["runAsUser"] == 65532, csc
    assert csc["readOnlyRootFilesystem"] is True, csc
    assert csc["allowPrivilegeEscalation"] is False, csc
    assert csc["capabilities"] == {"drop": ["ALL"]}, csc
    assert csc["seccompProfile"] == {"type": "RuntimeDefault"}, csc
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False

    # Resources.
    assert c["resources"]["requests"] and c["resources"]["limits"], c["resources"]

    # Data directory and /tmp are writable volumes.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert cm["LATCHKEY_DATA_DIR"] == "/var/lib/latchkey"
    assert "/var/lib/latchkey" in mounts and "/tmp" in mounts, mounts
    assert "emptyDir" in vols[mounts["/tmp"]], vols
    data_vol = vols[mounts["/var/lib/latchkey"]]
    if values.get("persistence", {}).get("enabled"):
        assert "persistentVolumeClaim" in data_vol, data_vol
        assert dep["spec"]["strategy"]["type"] == "Recreate"
    else:
        assert "emptyDir" in data_vol, data_vol

    # Settings: the ConfigMap through envFrom, secrets only through secretKeyRef.
    assert {"configMapRef": {"name": only(docs, "ConfigMap")["metadata"]["name"]}} in c["envFrom"]
    for env in c.get("env", []):
        if env["name"] in SECRET_ENVS:
            assert "value" not in env, f"{env['name']} has a literal value"
            assert set(env["valueFrom"]) == {"secretKeyRef"}, env

    # Rollouts follow the settings and the Secret.
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"]), annotations
    if not values.get("existingSecret", {}).get("name"):
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"]), annotations

    # Spread over zones and nodes.
    spread = {t["topologyKey"]: t for t in pod["topologySpreadConstraints"]}
    assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, spread
    expected = values.get("topologySpread", {}).get("whenUnsatisfiable", "ScheduleAnyway")
    for t in spread.values():
        assert t["whenUnsatisfiable"] == expected, t
        assert t["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"], t

    # One pod per SQLite database.
    hpa = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    if hpa:
        assert "replicas" not in dep["spec"], "replicas set although an HPA scales the Deployment"
        assert hpa[0]["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
    if "LATCHKEY_DATABASE_URL" not in {e["name"] for e in c.get("env", [])}:
        assert dep["spec"].get("replicas") == 1 and not hpa
        assert dep["spec"]["strategy"]["type"] == "Recreate"

    # The ServiceAccount the pods use exists (when the chart makes it) and mounts no token.
    sas = [d for d in docs if d["kind"] == "ServiceAccount"]
    if sas:
        assert sas[0]["metadata"]["name"] == pod["serviceAccountName"]
        assert sas[0]["automountServiceAccountToken"] is False


def service_checks(docs: list[dict]) -> None:
    svc = only(docs, "Service")
    dep = only(docs, "Deployment")
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert set(ports) == {"grpc", "http", "metrics"}, ports
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c", ports["grpc"]
    assert ports["http"]["appProtocol"] == "http", ports["http"]
    assert ports["metrics"]["appProtocol"] == "http", ports["metrics"]
    container_ports = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    for p in ports.values():
        assert p["targetPort"] in container_ports, p
    selector = svc["spec"]["selector"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items(), (selector, labels)


def config_checks(docs: list[dict]) -> None:
    data = only(docs, "ConfigMap")["data"]
    leaked = SECRET_ENVS & set(data)
    assert not leaked, f"secret settings in the ConfigMap: {leaked}"
    readme = (REPO / "README.md").read_text()
    for key, value in data.items():
        assert isinstance(value, str), f"{key} is not a string: {value!r}"
        assert re.fullmatch(r"(LATCHKEY|OTEL)_[A-Z0-9_]+", key), key
        if key.startswith("LATCHKEY_"):
            assert f"`{key}`" in readme, f"{key} is not a setting in README.md's configuration table"


def secrets_only_in_secret(docs: list[dict], notes: str, secrets: dict[str, str]) -> None:
    """Every secret value is in a Secret, and in nothing else (plain or base64)."""
    secret_docs = [d for d in docs if d["kind"] == "Secret"]
    in_secrets = set()
    for s in secret_docs:
        for v in s.get("data", {}).values():
            in_secrets.add(base64.b64decode(v).decode())
        in_secrets.update(s.get("stringData", {}).values())
    others = json.dumps([d for d in docs if d["kind"] != "Secret"]) + notes
    for what, value in secrets.items():
        assert value, f"no {what} to look for"
        # Plain, or percent-encoded inside a URL (an SMTP password in the SMTP URL).
        forms = {value, urllib.parse.quote(value, safe="")}
        assert any(f in s for f in forms for s in in_secrets), f"{what} is not in any Secret"
        for form in forms | {base64.b64encode(value.encode()).decode()}:
            assert form not in others, f"{what} appears outside the Secret"


def routes_checks(docs: list[dict]) -> None:
    svc = only(docs, "Service")
    http_port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "http")
    ing = only(docs, "Ingress")
    for rule in ing["spec"]["rules"]:
        paths = rule["http"]["paths"]
        assert {p["path"] for p in paths} == PUBLIC_PATHS, paths
        for p in paths:
            want = "Exact" if p["path"] == "/.well-known/jwks.json" else "Prefix"
            assert p["pathType"] == want, p
            assert p["backend"]["service"] == {"name": svc["metadata"]["name"],
                                               "port": {"number": http_port}}, p
    route = only(docs, "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] and all("name" in r for r in route["spec"]["parentRefs"])
    for rule in route["spec"]["rules"]:
        matches = {(m["path"]["type"], m["path"]["value"]) for m in rule["matches"]}
        assert {v for _, v in matches} == PUBLIC_PATHS, matches
        assert all(t in ("PathPrefix", "Exact") for t, _ in matches), matches
        assert rule["backendRefs"] == [{"name": svc["metadata"]["name"], "port": http_port}], rule
    exposed = json.dumps([ing["spec"], route["spec"]])
    for path in INTERNAL_PATHS:
        assert path not in exposed, f"{path} is routed from outside"


def servicemonitor_checks(docs: list[dict]) -> None:
    sm = only(docs, "ServiceMonitor")
    svc = only(docs, "Service")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == "metrics" and ep["path"] == "/metrics", ep
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["metrics"]["targetPort"] == "metrics", ports
    assert re.fullmatch(r"([0-9]+(ms|s|m|h))+", ep["interval"]), ep


def networkpolicy_checks(docs: list[dict], values: dict) -> None:
    np_ = only(docs, "NetworkPolicy")
    assert np_["spec"]["podSelector"]["matchLabels"] == \
        only(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    rule, metrics = np_["spec"]["ingress"]
    assert {(p["port"], p["protocol"]) for p in rule["ports"]} == {("grpc", "TCP"), ("http", "TCP")}
    assert rule["from"] == values["networkPolicy"]["ingress"]["from"], rule
    assert [(p["port"], p["protocol"]) for p in metrics["ports"]] == [("metrics", "TCP")]
    assert metrics["from"] == values["networkPolicy"]["ingress"]["metricsFrom"], metrics
    assert "Egress" in np_["spec"]["policyTypes"]
    dns = np_["spec"]["egress"][0]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert np_["spec"]["egress"][1:] == values["networkPolicy"]["egress"]["rules"]


def pdb_checks(docs: list[dict]) -> None:
    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == \
        only(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"]), pdb["spec"]


# --------------------------------------------------------------------------
# Static checks


def leaf_paths(values, prefix="") -> set[str]:
    """Value names as the README lists them: stops at lists and free-form maps."""
    out = set()
    if isinstance(values, dict) and values:
        for k, v in values.items():
            out |= leaf_paths(v, f"{prefix}.{k}" if prefix else k)
    else:
        out.add(prefix)
    return out


def readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.M))
    with helm.Chart.load(CHART) as chart:
        defaults, schema = chart.values, chart.schema
    # Free-form maps (labels, resources, securityContexts…) are documented as a whole.
    every = leaf_paths(defaults) | {f"config.{k}" for k in schema["properties"]["config"]["properties"]}
    names = {n for n in every if not any(n.startswith(d + ".") for d in documented)}
    missing = sorted(names - documented)
    assert not missing, f"README.md does not document {missing}"
    stale = sorted(d for d in documented
                   if d not in every and not any(n.startswith(d + ".") for n in every))
    assert not stale, f"README.md documents values that do not exist: {stale}"


def app_version_matches_cargo() -> None:
    cargo = (REPO / "Cargo.toml").read_text()
    version = re.search(r'^\[package\][^\[]*?^version\s*=\s*"([^"]+)"', cargo, re.M | re.S).group(1)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2", chart["apiVersion"]
    assert str(chart["appVersion"]) == version, (chart["appVersion"], version)


def dockerfile_matches_chart() -> None:
    text = (REPO / "Dockerfile").read_text()
    for needle in ("rust:1.95-slim-bookworm", "gcr.io/distroless/cc-debian12:nonroot",
                   "cargo build --release --locked", "USER 65532:65532",
                   "EXPOSE 50051 8080 9464", 'ENTRYPOINT ["/usr/local/bin/latchkey"]', 'CMD ["serve"]',
                   "LATCHKEY_GRPC_ADDR=0.0.0.0:50051", "LATCHKEY_HTTP_ADDR=0.0.0.0:8080", "LATCHKEY_METRICS_ADDR=0.0.0.0:9464",
                   "LATCHKEY_DATA_DIR=/var/lib/latchkey", "LATCHKEY_LOG_FORMAT=json"):
        assert needle in text, f"Dockerfile lacks {needle!r}"
    ignore = (REPO / ".dockerignore").read_text().split()
    for needed in ("!src/", "!proto/", "!migrations/", "!templates/", "!Cargo.lock"):
        assert needed in ignore, f".dockerignore does not let {needed[1:]} in"


def validator_rejects_bad_manifests(docs: list[dict]) -> None:
    """The strict validation really validates: a made-up field and a wrong type fail."""
    dep = copy.deepcopy(only(docs, "Deployment"))
    dep["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["sevice"] = "x"
    svc = copy.deepcopy(only(docs, "Service"))
    svc["spec"]["ports"][0]["port"] = "fifty"
    for bad in (dep, svc):
        try:
            kubernetes_validate.validate(bad, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError:
            continue
        raise AssertionError(f"a broken {bad['kind']} passed validation")


# --------------------------------------------------------------------------


def main() -> int:
    print(f"helm SDK {helm.helm_sdk_version()} (libhelm_c {helm.helm_c_version()}, "
          f"{helm.library_path}); kubernetes-validate {kubernetes_validate.__version__}, "
          f"Kubernetes {KUBE_VERSION}")
    all_options = load_values(ALL_OPTIONS)

    # Lint.
    def lint(values: dict) -> None:
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE,
                           kube_version=f"v{KUBE_VERSION}")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, problems

    check("helm lint --strict (defaults)", lambda: lint({}))
    check("helm lint --strict (ci-values/all-options.yaml)", lambda: lint(all_options))
    check("Chart apiVersion v2, appVersion = Cargo.toml version", app_version_matches_cargo)
    check("README.md documents every value, and only those", readme_documents_every_value)
    check("Dockerfile and .dockerignore match the chart", dockerfile_matches_chart)

    # Scenarios: values, the secrets they carry, the objects expected.
    kek = all_options["keyEncryptionKey"]
    smtp_password = all_options["smtp"]["password"]
    db_url = all_options["database"]["url"]
    scenarios = {
        "defaults": ({}, ["ConfigMap", "Deployment", "Secret", "Service", "ServiceAccount"]),
        "all-options": (all_options, ["ConfigMap", "Deployment", "HTTPRoute",
                                      "HorizontalPodAutoscaler", "Ingress", "NetworkPolicy",
                                      "PodDisruptionBudget", "Secret", "Service",
                                      "ServiceAccount", "ServiceMonitor"]),
        "existingSecret": ({"replicaCount": 2, "existingSecret": {"name": "latchkey-prod"},
                            "serviceAccount": {"create": False}},
                           ["ConfigMap", "Deployment", "Service"]),
        "sqlite with persistence": ({"persistence": {"enabled": True, "storageClass": "fast"}},
                                    ["ConfigMap", "Deployment", "PersistentVolumeClaim",
                                     "Secret", "Service", "ServiceAccount"]),
    }
    rendered: dict[str, tuple[list[dict], str]] = {}
    for name, (values, expected_kinds) in scenarios.items():
        def do_render(name=name, values=values, expected_kinds=expected_kinds):
            docs, notes = render(values)
            assert kinds(docs) == sorted(expected_kinds), kinds(docs)
            assert notes.strip(), "no NOTES.txt"
            for d in docs:
                assert d["metadata"].get("namespace") == NAMESPACE, d["metadata"]
            rendered[name] = (docs, notes)

        check(f"[{name}] renders {', '.join(expected_kinds)}", do_render)
        if name not in rendered:
            continue
        docs, notes = rendered[name]
        check(f"[{name}] every manifest valid for Kubernetes {KUBE_VERSION} (strict)",
              lambda docs=docs: validate_manifests(docs))
        check(f"[{name}] Deployment: gRPC probes, security, volumes, env, spread",
              lambda docs=docs, values=values: deployment_checks(docs, values))
        check(f"[{name}] Service ports grpc/http with appProtocol",
              lambda docs=docs: service_checks(docs))
        check(f"[{name}] ConfigMap holds only README settings and no secrets",
              lambda docs=docs: config_checks(docs))

    if "defaults" in rendered:
        docs, notes = rendered["defaults"]

        def generated_kek():
            secret = only(docs, "Secret")
            value = base64.b64decode(secret["data"]["key-encryption-key"]).decode()
            assert len(base64.b64decode(value, validate=True)) == 32, "KEK is not 32 bytes base64"
            assert set(secret["data"]) == {"key-encryption-key"}, secret["data"].keys()
            assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
            secrets_only_in_secret(docs, notes, {"generated key-encryption key": value})
            other, _ = render({})
            assert only(other, "Secret")["data"] != secret["data"], "the KEK is not random"

        check("[defaults] KEK generated (32 bytes), only in the Secret", generated_kek)
        check("[defaults] strict validation rejects broken manifests",
              lambda: validator_rejects_bad_manifests(docs))

    if "all-options" in rendered:
        docs, notes = rendered["all-options"]

        def all_secrets():
            secrets_only_in_secret(docs, notes, {
                "database URL": db_url, "SMTP password": smtp_password,
                "key-encryption key": kek})
            data = {k: base64.b64decode(v).decode() for k, v in only(docs, "Secret")["data"].items()}
            url = urllib.parse.urlsplit(data["smtp-url"])
            assert (url.scheme, url.hostname, url.port, url.query) == \
                ("smtp", "smtp.example.com", 587, "tls=required"), data["smtp-url"]
            assert urllib.parse.unquote(url.username) == all_options["smtp"]["username"]
            assert urllib.parse.unquote(url.password) == smtp_password, url.password
            assert data["database-url"] == db_url and data["key-encryption-key"] == kek

        def every_config_key_rendered():
            data = only(docs, "ConfigMap")["data"]
            with helm.Chart.load(CHART) as chart:
                props = chart.schema["properties"]["config"]["properties"]
            assert set(all_options["config"]) == set(props), \
                f"all-options.yaml misses config keys {set(props) - set(all_options['config'])}"
            for key in props:
                env = "LATCHKEY_" + re.sub(r"(?<!^)(?=[A-Z])", "_", key).upper()
                assert env in data, f"config.{key} did not become {env}"
            assert data["LATCHKEY_CORS_ALLOWED_ORIGINS"] == \
                "https://app.example.com,https://admin.example.com"
            assert data["LATCHKEY_RATE_LIMIT_TENANT"] == "1200000", "a large number was mangled"
            assert data["LATCHKEY_SHUTDOWN_DELAY"] == "10s"
            assert data["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://")

        check("[all-options] DB URL, SMTP password and KEK only in the Secret", all_secrets)
        check("[all-options] every config.* key becomes its LATCHKEY_* variable",
              every_config_key_rendered)
        check("[all-options] Ingress and HTTPRoute route only the public API, not /metrics",
              lambda: routes_checks(docs))
        check("[all-options] ServiceMonitor scrapes port http at /metrics",
              lambda: servicemonitor_checks(docs))
        check("[all-options] NetworkPolicy: grpc/http from the peers, DNS + rules out",
              lambda: networkpolicy_checks(docs, all_options))
        check("[all-options] PodDisruptionBudget", lambda: pdb_checks(docs))

    if "existingSecret" in rendered:
        docs, _ = rendered["existingSecret"]

        def uses_existing_secret():
            (c,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]
                    if e["name"] in SECRET_ENVS}
            assert refs == {
                "LATCHKEY_DATABASE_URL": {"name": "latchkey-prod", "key": "database-url"},
                "LATCHKEY_SMTP_URL": {"name": "latchkey-prod", "key": "smtp-url"},
                "LATCHKEY_KEY_ENCRYPTION_KEY": {"name": "latchkey-prod",
                                                "key": "key-encryption-key"},
            }, refs
            dep = only(docs, "Deployment")
            assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "default"
            assert dep["spec"]["strategy"]["type"] == "RollingUpdate"

        check("[existingSecret] env refers to the named Secret's keys", uses_existing_secret)

    # SMTP URL building from parts.
    def smtp_parts():
        docs, _ = render({"smtp": {"host": "mail.example.com", "port": 465, "security": "tls",
                                   "username": "a b", "password": "x+y%z@"}})
        url = base64.b64decode(only(docs, "Secret")["data"]["smtp-url"]).decode()
        assert url == "smtps://a%20b:x%2By%25z%40@mail.example.com:465", url
        docs, _ = render({"smtp": {"host": "relay.internal", "port": 25, "security": "none"}})
        url = base64.b64decode(only(docs, "Secret")["data"]["smtp-url"]).decode()
        assert url == "smtp://relay.internal:25", url

    check("smtp.host/port/security/username/password build a percent-encoded URL", smtp_parts)

    # Values that must be refused at install time.
    bad_values = [
        ("schema: replicaCount: \"three\"", {"replicaCount": "three"},
         "at '/replicaCount': got string, want integer"),
        ("schema: unknown top-level key", {"replicas": 2}, "'replicas' not allowed"),
        ("schema: unknown nested key", {"image": {"name": "x"}}, "'name' not allowed"),
        ("schema: secret as a config key", {"config": {"databaseUrl": "postgres://x/y"}},
         "'databaseUrl' not allowed"),
        ("schema: bad enum (signingAlg)", {"config": {"signingAlg": "HS256"}},
         "at '/config/signingAlg'"),
        ("schema: below minimum (codeLength 5)", {"config": {"codeLength": 5}},
         "at '/config/codeLength'"),
        ("schema: bad duration", {"config": {"codeTtl": "ten minutes"}}, "at '/config/codeTtl'"),
        ("schema: KEK not 32 bytes base64", {"keyEncryptionKey": "c2hvcnQ="},
         "at '/keyEncryptionKey'"),
        ("schema: database URL scheme", {"database": {"url": "mysql://x/y"}}, "at '/database/url'"),
        ("schema: service type", {"service": {"type": "ExternalName"}}, "at '/service/type'"),
        ("schema: negative replicaCount", {"replicaCount": -1}, "at '/replicaCount'"),
        ("guard: replicaCount 2 without a database", {"replicaCount": 2},
         "replicaCount is 2, but without a PostgreSQL database"),
        ("guard: replicaCount 2 with a sqlite: URL",
         {"replicaCount": 2, "database": {"url": "sqlite:///var/lib/latchkey/x.db"}},
         "replicaCount is 2, but without a PostgreSQL database"),
        ("guard: autoscaling without a database", {"autoscaling": {"enabled": True}},
         "autoscaling.enabled needs a PostgreSQL database"),
        ("guard: existingSecret without database key and 2 replicas",
         {"replicaCount": 2, "existingSecret": {"name": "s", "databaseUrlKey": ""}},
         "replicaCount is 2, but without a PostgreSQL database"),
        ("guard: terminationGracePeriodSeconds = delay + grace + 8",
         {"terminationGracePeriodSeconds": 33}, "terminationGracePeriodSeconds (33) must be greater"),
        ("guard: terminationGracePeriodSeconds too small for a longer grace",
         {"shutdown": {"graceSeconds": 40}}, "terminationGracePeriodSeconds (35) must be greater"),
        ("guard: existingSecret together with database.url",
         {"existingSecret": {"name": "s"}, "database": {"url": "postgres://u:p@db/x"}},
         "existingSecret.name is set"),
        ("guard: smtp.url and smtp.host", {"smtp": {"url": "smtp://a:25", "host": "b"}},
         "either smtp.url or smtp.host"),
        ("guard: SMTP credentials without TLS",
         {"smtp": {"host": "relay", "port": 25, "security": "none", "username": "u", "password": "p"}},
         "would send the password without TLS"),
        ("guard: persistence with several replicas",
         {"replicaCount": 2, "database": {"url": "postgres://u:p@db/x"},
          "persistence": {"enabled": True}}, "persistence.enabled mounts one"),
        ("guard: persistence with autoscaling",
         {"database": {"url": "postgres://u:p@db/x"}, "autoscaling": {"enabled": True},
          "persistence": {"enabled": True}}, "cannot go with autoscaling"),
        ("guard: PDB with both minAvailable and maxUnavailable",
         {"podDisruptionBudget": {"enabled": True, "minAvailable": 1}},
         "set exactly one of maxUnavailable and minAvailable"),
        ("guard: HTTPRoute without parentRefs", {"httpRoute": {"enabled": True}},
         "httpRoute.enabled needs httpRoute.parentRefs"),
        ("guard: PostgreSQL without SMTP", {"database": {"url": "postgres://u:p@db/x"}},
         "a PostgreSQL database without SMTP"),
        ("guard: existingSecret with a database and no SMTP key",
         {"existingSecret": {"name": "s", "smtpUrlKey": ""}},
         "a PostgreSQL database without SMTP"),
    ]
    for name, values, fragment in bad_values:
        def refused(values=values, fragment=fragment):
            message = render_error(values)
            assert fragment in message, f"the error does not mention {fragment!r}: {message}"
            # The line that names the problem, as `helm install` would print it.
            lines = [ln.strip(" -") for ln in message.splitlines() if fragment in ln]
            return "-> " + lines[0]
        check(f"refused: {name}", refused)

    def guard_boundary():
        docs, _ = render({"terminationGracePeriodSeconds": 34})
        assert only(docs, "Deployment")["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"] == 34
        docs, _ = render({"replicaCount": 2, "database": {"url": "postgres://u:p@db/x"},
                          "smtp": {"url": "smtps://relay:465"}})
        assert only(docs, "Deployment")["spec"]["replicas"] == 2
        docs, _ = render({"database": {"url": "postgres://u:p@db/x"},
                          "config": {"devMailbox": True}})
        assert only(docs, "ConfigMap")["data"]["LATCHKEY_DEV_MAILBOX"] == "true"

    check("accepted: terminationGracePeriodSeconds 34, 2 replicas with PostgreSQL and SMTP, "
          "PostgreSQL with config.devMailbox", guard_boundary)

    print(f"\n{len(passed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
