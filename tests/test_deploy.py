"""deploy/ validated without a container engine: promtool on the Prometheus configuration and alert
rules (with the rules' own unit tests), kubeconform on the kustomize build with offline schemas,
the compose file, Dockerfile and Grafana files by structure, and every metric name that a
dashboard or rule uses against shopguide/metrics.py and Triton's own metrics."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from shopguide.config import Settings
from shopguide.metrics import FinetuneMetrics, WorkerMetrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
RULES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
COMPOSE = DEPLOY / "compose.yaml"
TRITON_DOCKERFILE = DEPLOY / "triton.Dockerfile"
KUBERNETES_VERSION = "1.32.0"
REQUIRED_ALERTS = {"ShopguideConsumerLagGrowing", "ShopguideFallbackRatioHigh", "ShopguideDeadLetterSpike",
                   "ShopguideNoRecommendations", "ShopguideModelStale"}
# Triton's own metrics that the dashboard and rules may use (server docs, "Metrics").
TRITON_METRICS = {
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
    "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us", "nv_inference_pending_request_count",
}
PROMETHEUS_METRICS = {"up"}
SAMPLE_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
                   "histogram": ("_bucket", "_sum", "_count", "_created")}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"}


def tool(name: str) -> str:
    """A validator from PATH or the project's tool cache (`make setup` installs both kinds)."""
    path = shutil.which(name) or Settings.from_env().cache / "bin" / name
    if not Path(path).exists():
        pytest.fail(f"{name} is missing: run `make setup`")
    return str(path)


def run(*command: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result


def metric_families() -> list:
    registry = CollectorRegistry()
    WorkerMetrics(registry), FinetuneMetrics(registry)
    return list(registry.collect())


def known_metric_names() -> set[str]:
    return {family.name + suffix for family in metric_families()
            for suffix in SAMPLE_SUFFIXES[family.type]} | TRITON_METRICS | PROMETHEUS_METRICS


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, labels."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = re.findall(r"(?<![\w.$])[a-zA-Z_:][\w:]*\b(?!\s*\()", expr)
    return set(names) - PROMQL_WORDS


def alert_rules() -> list[dict]:
    return [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule]


def dashboard_exprs(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


@pytest.mark.parametrize("config", ["prometheus/prometheus.yml", "k8s/prometheus.yml"])
def test_prometheus_configs_pass_promtool(config):
    assert "SUCCESS" in run(tool("promtool"), "check", "config", str(DEPLOY / config)).stdout


def test_alert_rules_pass_promtool():
    assert RULES
    output = run(tool("promtool"), "check", "rules", *map(str, RULES)).stdout
    assert output.count("SUCCESS") == len(RULES)


def test_alert_rules_pass_their_unit_tests():
    """deploy/prometheus/tests/: synthetic series that must fire (and not fire) the alerts."""
    tests = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
    assert tests
    run(tool("promtool"), "test", "rules", *map(str, tests))


def test_every_alert_has_a_duration_severity_and_explanation():
    rules = alert_rules()
    assert REQUIRED_ALERTS <= {rule["alert"] for rule in rules}
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 40, rule["alert"]


def test_metric_name_extraction():
    expr = 'sum by (le) (rate(a_bucket{x="b{c}"}[$__rate_interval])) / on(x) group_left b_total > 1e6 and bool c'
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def test_rules_and_dashboards_use_only_known_metrics():
    known = known_metric_names()
    exprs = [rule["expr"] for rule in alert_rules()]
    exprs += [expr for path in DASHBOARDS for expr in dashboard_exprs(json.loads(path.read_text()))]
    used = set().union(*map(metric_names, exprs))
    assert used - known == set()
    unwatched = {family.name for family in metric_families() if not any(name.startswith(family.name) for name in used)}
    assert unwatched == set()


def test_dashboards_have_a_query_in_every_panel():
    assert DASHBOARDS
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
        assert dashboard["uid"] and dashboard["title"] and panels
        assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
        for panel in panels:
            assert panel["targets"] and all(target["expr"].strip() for target in panel["targets"]), panel["title"]
            assert panel["datasource"]["uid"] == "prometheus", panel["title"]
            assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()


def test_grafana_provisioning_matches_compose():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasource, = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["uid"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in services
    provider, = yaml.safe_load((provisioning / "dashboards" / "shopguide.yml").read_text())["providers"]
    mounts = dict(reversed(volume.split(":")[:2]) for volume in services["grafana"]["volumes"])
    assert (DEPLOY / mounts[provider["options"]["path"]]).resolve() == DEPLOY / "grafana" / "dashboards"
    assert (DEPLOY / mounts["/etc/grafana/provisioning"]).resolve() == provisioning


def test_compose_file_structure():
    compose = yaml.safe_load(COMPOSE.read_text())
    services, volumes = compose["services"], compose.get("volumes", {})
    images = {name: service.get("image", "") for name, service in services.items()}
    assert images["kafka"].startswith("apache/kafka:")
    triton_build = services["triton"]["build"]
    assert (DEPLOY / triton_build["context"] / triton_build["dockerfile"]).resolve() == TRITON_DOCKERFILE
    assert re.search(r"^ARG TRITON_IMAGE=nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3$", TRITON_DOCKERFILE.read_text(), re.M)
    assert images["prometheus"].startswith("prom/prometheus:") and images["grafana"].startswith("grafana/grafana:")
    assert all(":" in image and not image.endswith(":latest") for image in images.values())
    for name, target in (("worker", "worker"), ("finetune", "trainer")):
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert build["target"] == target and images[name].startswith(f"shopguide-{target}:"), name
    gpus = services["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpus[0]["driver"] == "nvidia" and "gpu" in gpus[0]["capabilities"]
    assert services["worker"]["deploy"]["replicas"] == int(services["worker"]["environment"]["SHOPGUIDE_PARTITIONS"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in volumes if not source.startswith(".") else (DEPLOY / source).exists(), (name, volume)
        for port in service.get("ports", []):
            assert re.fullmatch(r"\$\{SHOPGUIDE_PUBLISH_ADDRESS:-127\.0\.0\.1\}:\d+:\d+", port), (name, port)
        assert set(service.get("depends_on", [])) <= services.keys(), name
    prometheus = services["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]


def compose_command() -> list[str] | None:
    """`docker compose` where its plugin is installed, else Debian's docker-compose (1.29)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return [shutil.which("docker-compose")] if shutil.which("docker-compose") else None


def test_compose_file_by_docker_compose():
    """The compose implementation's own schema and interpolation checks (no engine needed)."""
    command = compose_command()
    if command is None:
        pytest.fail("neither `docker compose` nor docker-compose is installed: run `make setup`")
    services = run(*command, "-f", str(COMPOSE), "config", "--services").stdout.split()
    assert {"kafka", "triton", "worker", "finetune", "prometheus", "grafana"} <= set(services)


def dockerfile_stages() -> dict[str, list[str]]:
    """deploy/Dockerfile's stages by name: each one's instructions (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    stages = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            if line.startswith("FROM"):
                stages[line.split()[-1]] = instructions = []
            instructions.append(line)
    return stages


def test_dockerfile_has_a_slim_worker_and_a_trainer_stage():
    """The worker stage installs the core only; the trainer stage adds [train] on top of it."""
    stages = dockerfile_stages()
    worker, trainer = stages["worker"], stages["trainer"]
    assert worker[0] == "FROM python:3.11-slim AS worker" and trainer[0] == "FROM worker AS trainer"
    installs = {name: [line for line in lines if "pip install" in line] for name, lines in stages.items()}
    assert len(installs["worker"]) == 1 and re.search(r"pip install \.( |$)", installs["worker"][0])
    assert len(installs["trainer"]) == 1 and "[train]" in installs["trainer"][0]
    copied = {source for line in worker if line.startswith("COPY") for source in line.split()[1:-1]}
    assert all((ROOT / source).exists() for source in copied)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {name.rstrip("*") for name in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, "every package of the install is copied into the image"
    assert 'ENTRYPOINT ["shopguide"]' in worker and 'CMD ["worker"]' in worker
    assert any(line.startswith('CMD ["finetune"') for line in trainer)
    assert "shopguide" in project["project"]["scripts"]


@pytest.fixture(scope="module")
def k8s_manifests() -> str:
    """The kustomize build of deploy/k8s, as `kubectl apply -k` would send it."""
    kubectl = shutil.which("kubectl")
    command = [kubectl, "kustomize"] if kubectl else [tool("kustomize"), "build"]
    return run(*command, str(DEPLOY / "k8s")).stdout


@pytest.fixture(scope="module")
def kube_schemas(tmp_path_factory) -> Path:
    """Kubernetes JSON schemas from the kubernetes-validate wheel, laid out for kubeconform.

    The wheel's kind schemas refer to "/api/_definitions.json" under a kubernetes.io $id; rewritten
    to a sibling file, kubeconform resolves them offline."""
    import kubernetes_validate

    name = f"v{KUBERNETES_VERSION}-local-strict"
    source = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / name
    target = tmp_path_factory.mktemp("kube-schemas")
    (target / name).mkdir()
    for path in source.glob("*.json"):
        schema = json.loads(path.read_text().replace('"/api/_definitions.json#', '"_definitions.json#'))
        if path.name != "_definitions.json":
            schema.pop("$id", None)
        (target / name / path.name).write_text(json.dumps(schema))
    return target


def test_k8s_manifests_pass_kubeconform(k8s_manifests, kube_schemas):
    location = str(kube_schemas) + "/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/" \
                                   "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    result = run(tool("kubeconform"), "-strict", "-summary", "-kubernetes-version", KUBERNETES_VERSION,
                 "-schema-location", location, "-", stdin=k8s_manifests)
    count = len(list(yaml.safe_load_all(k8s_manifests)))
    assert f"Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0" in result.stdout


def test_kubeconform_rejects_an_unknown_field(kube_schemas):
    """The offline schemas are strict: a misspelt field fails (so the test above can fail)."""
    location = str(kube_schemas) + "/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/" \
                                   "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    manifest = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {portz: []}\n"
    result = subprocess.run([tool("kubeconform"), "-strict", "-kubernetes-version", KUBERNETES_VERSION,
                             "-schema-location", location, "-"], input=manifest, capture_output=True, text=True)
    assert result.returncode != 0 and "portz" in result.stdout


def test_k8s_workload_shape(k8s_manifests):
    objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(k8s_manifests)}
    env = next(o for (kind, name), o in objects.items() if kind == "ConfigMap" and name.startswith("shopguide-env"))
    worker = objects["Deployment", "shopguide-worker"]
    assert worker["spec"]["replicas"] == int(env["data"]["SHOPGUIDE_PARTITIONS"]) == Settings().partitions
    container, = worker["spec"]["template"]["spec"]["containers"]
    metrics_port = int(env["data"]["SHOPGUIDE_WORKER_PORT"])
    assert container["ports"] == [{"name": "metrics", "containerPort": metrics_port}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert container["envFrom"][0]["configMapRef"]["name"] == env["metadata"]["name"]

    triton = objects["Deployment", "triton"]["spec"]["template"]["spec"]
    server, = triton["containers"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert any(mount["mountPath"] == "/models" for mount in server["volumeMounts"])
    assert objects["CronJob", "shopguide-finetune"]["spec"]["concurrencyPolicy"] == "Forbid"

    pods = [o["spec"]["template"] for o in objects.values() if o["kind"] == "Deployment"]
    pods += [o["spec"]["jobTemplate"]["spec"]["template"] for o in objects.values() if o["kind"] == "CronJob"]
    for (kind, name), service in objects.items():
        if kind == "Service":
            selector = service["spec"]["selector"].items()
            assert any(selector <= pod["metadata"]["labels"].items() for pod in pods), name



def test_k8s_roles_run_their_images(k8s_manifests):
    """Workers run the slim image, the fine-tune job the trainer image, both named through the
    kustomization's `images:` (no bare local name reaches the cluster)."""
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    expected = {image["name"]: f"{image['newName']}:{image['newTag']}" for image in kustomization["images"]}
    objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(k8s_manifests)}

    def images(pod: dict) -> dict[str, str]:
        return {c["name"]: c["image"] for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]}

    worker = images(objects["Deployment", "shopguide-worker"]["spec"]["template"])
    finetune = images(objects["CronJob", "shopguide-finetune"]["spec"]["jobTemplate"]["spec"]["template"])
    triton = images(objects["Deployment", "triton"]["spec"]["template"])
    assert worker == {"worker": expected["shopguide-worker"]}
    assert finetune == {"finetune": expected["shopguide-trainer"]}
    assert triton == {"seed-repository": expected["shopguide-worker"], "triton": expected["shopguide-triton"]}
    everything = [image for pod in (worker, finetune, triton) for image in pod.values()]
    assert not [image for image in everything if image.startswith("shopguide")]


def test_compose_replicates_every_topic_three_times_with_two_in_sync():
    compose = yaml.safe_load(COMPOSE.read_text())
    brokers = {name: svc["environment"] for name, svc in compose["services"].items()
               if "KAFKA_NODE_ID" in svc.get("environment", {})}
    assert len(brokers) == 3
    for env in brokers.values():
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2" and env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
    worker_env = compose["services"]["worker"]["environment"]
    assert worker_env["SHOPGUIDE_REPLICATION"] == "3" and worker_env["SHOPGUIDE_WORKER_HOST"] == "0.0.0.0"
    assert len(worker_env["SHOPGUIDE_BOOTSTRAP_SERVERS"].split(",")) == 3


def test_k8s_workers_replicate_and_listen_beyond_loopback(k8s_manifests):
    config, = [doc for doc in yaml.safe_load_all(k8s_manifests)
               if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("shopguide-env")]
    assert config["data"]["SHOPGUIDE_REPLICATION"] == "3" and config["data"]["SHOPGUIDE_WORKER_HOST"] == "0.0.0.0"


# Locked down: what is published, who talks to whom, how each container runs.

PUBLISHED = {"kafka", "kafka-2", "kafka-3", "grafana"}
INTERNAL_ONLY = {"kafka-users", "triton", "worker", "finetune", "prometheus"}
# The flows of the architecture: (from, to, port); "kafka" and "prometheus" live outside the namespace.
FLOWS = {("shopguide-worker", "kafka", 9093), ("shopguide-worker", "triton", 8001),
         ("shopguide-finetune", "kafka", 9093), ("shopguide-finetune", "triton", 8001),
         ("prometheus", "shopguide-worker", 6066), ("prometheus", "shopguide-finetune", 6067),
         ("prometheus", "triton", 8002)}
OUTSIDE = {"kafka/*": "kafka", "monitoring/prometheus": "prometheus"}  # namespace/pod -> the peer in FLOWS


def compose_services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_compose_publishes_only_the_storefront_listeners_and_grafana_on_loopback():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {name for name, service in services.items() if service.get("ports")} == PUBLISHED
    resolved = yaml.safe_load(run(*compose_command(), "-f", str(COMPOSE), "config").stdout)["services"]
    for name in PUBLISHED:
        for port in resolved[name]["ports"]:
            text = port if isinstance(port, str) else f"{port['host_ip']}:{port['published']}:{port['target']}"
            assert text.startswith("127.0.0.1:"), (name, port)
    for name in PUBLISHED - {"grafana"}:  # the published container port is the SASL listener
        env = services[name]["environment"]
        assert [port.split(":")[-1] for port in services[name]["ports"]] == ["29092"]
        assert "HOST:SASL_PLAINTEXT" in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
        assert "HOST://:29092" in env["KAFKA_LISTENERS"].split(",")


def test_compose_keeps_triton_prometheus_and_workers_on_the_internal_network():
    compose = yaml.safe_load(COMPOSE.read_text())
    assert compose["networks"]["internal"]["internal"] is True
    for name in INTERNAL_ONLY:
        assert compose["services"][name]["networks"] == ["internal"], name
        assert "ports" not in compose["services"][name] and "expose" not in compose["services"][name], name


def test_compose_grafana_takes_its_admin_password_from_a_secret_and_admits_no_anonymous():
    compose = yaml.safe_load(COMPOSE.read_text())
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    secret = env["GF_SECURITY_ADMIN_PASSWORD__FILE"].removeprefix("/run/secrets/")
    assert secret in grafana["secrets"] and "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    for name in compose["secrets"].values():
        assert name["file"].startswith("./secrets/")
    assert "/deploy/secrets/" in (ROOT / ".gitignore").read_text().splitlines()


def test_compose_prometheus_has_no_lifecycle_or_admin_api():
    command = compose_services()["prometheus"]["command"]
    assert not [flag for flag in command if flag.startswith(("--web.enable-lifecycle", "--web.enable-admin-api"))]


def test_nothing_installs_from_the_network_at_start(k8s_manifests):
    """The ONNX Runtime wheel comes from the derived Triton image, pinned; no container pip-installs."""
    commands = [" ".join(map(str, service.get("command", []) + service.get("entrypoint", [])))
                for service in compose_services().values()]
    commands += [" ".join(c.get("command", []) + c.get("args", [])) for c in k8s_containers(k8s_manifests)]
    assert not [command for command in commands if "pip " in command]
    assert re.search(r"^ARG ONNXRUNTIME=onnxruntime-gpu==[\d.]+$", TRITON_DOCKERFILE.read_text(), re.M)
    assert compose_services()["triton"]["image"].startswith("shopguide-triton:")


def k8s_objects(manifests: str) -> list[dict]:
    return list(yaml.safe_load_all(manifests))


def k8s_pods(manifests: str) -> dict[str, dict]:
    """Every pod template by its workload's name."""
    pods = {}
    for o in k8s_objects(manifests):
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            pods[o["metadata"]["name"]] = o["spec"]["template"]
        elif o["kind"] == "CronJob":
            pods[o["metadata"]["name"]] = o["spec"]["jobTemplate"]["spec"]["template"]
    return pods


def k8s_containers(manifests: str) -> list[dict]:
    return [c for pod in k8s_pods(manifests).values() for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]]


def test_k8s_every_container_runs_locked_down(k8s_manifests):
    pods = k8s_pods(k8s_manifests)
    assert set(pods) == {"shopguide-worker", "shopguide-finetune", "triton"}
    for name, pod in pods.items():
        spec = pod["spec"]
        pod_context = spec["securityContext"]
        assert pod_context["runAsNonRoot"] is True and pod_context["runAsUser"] > 0, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            seccomp = context.get("seccompProfile", pod_context.get("seccompProfile"))
            assert seccomp == {"type": "RuntimeDefault"}, where
            assert context.get("runAsUser", pod_context["runAsUser"]) > 0, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= resources.get(kind, {}).keys(), (where, kind)


def test_k8s_writable_paths_are_volumes(k8s_manifests):
    """/tmp everywhere, the worker's home (Faust's data dir) and the fine-tune job's home (library
    caches) are emptyDirs; only the fine-tune job and the seed step write the model repository."""
    env = next(o for o in k8s_objects(k8s_manifests) if o["metadata"]["name"].startswith("shopguide-env"))["data"]
    for name, pod in k8s_pods(k8s_manifests).items():
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        for container in pod["spec"]["containers"]:
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]["name"]], name
            if name != "triton":
                assert "emptyDir" in volumes[mounts[env["SHOPGUIDE_HOME"]]["name"]], name
            models = mounts.get("/models")
            assert models is None or models.get("readOnly", False) == (name == "triton"), name


def test_k8s_kafka_settings_are_valid_and_their_files_mounted(k8s_manifests):
    env = next(o for o in k8s_objects(k8s_manifests) if o["metadata"]["name"].startswith("shopguide-env"))["data"]
    settings = Settings.from_env(env)  # the same checks as at start
    assert settings.kafka_security_protocol == "SASL_SSL" and settings.kafka_sasl_mechanism.startswith("SCRAM-")
    for name in ("shopguide-worker", "shopguide-finetune"):
        pod = k8s_pods(k8s_manifests)[name]["spec"]
        secrets = {v["name"] for v in pod["volumes"] if "secret" in v}
        mounts = [m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"] if m["name"] in secrets]
        for path in (settings.kafka_sasl_password_file, settings.kafka_ca_file):
            assert any(path.parent == Path(mount) for mount in mounts), (name, path)


def policy_peer(peer: dict) -> str:
    """A NetworkPolicy peer in FLOWS' terms; anything broader reads as what it is ("anywhere", ...)."""
    if "ipBlock" in peer:
        return peer["ipBlock"]["cidr"]
    pod = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name", "*")
    if "namespaceSelector" not in peer:
        return "anywhere" if not peer else pod
    namespace = peer["namespaceSelector"].get("matchLabels", {}).get("kubernetes.io/metadata.name", "*")
    return OUTSIDE.get(f"{namespace}/{pod}", f"{namespace}/{pod}")


def policy_flows(manifests: str) -> tuple[set, set]:
    """(allowed egress, allowed ingress) as (from, to, port) from the NetworkPolicies; DNS aside."""
    egress, ingress = set(), set()
    for policy in (o for o in k8s_objects(manifests) if o["kind"] == "NetworkPolicy"):
        selected = policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        for rule in policy["spec"].get("egress", []):
            ports = [p["port"] for p in rule.get("ports", [{"port": "any"}])]
            egress |= {(selected, policy_peer(peer), port) for peer in rule.get("to", [{}]) for port in ports}
        for rule in policy["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [{"port": "any"}])]
            ingress |= {(policy_peer(peer), selected, port) for peer in rule.get("from", [{}]) for port in ports}
    return egress, ingress


def test_k8s_network_policies_allow_only_the_architectures_flows(k8s_manifests):
    policies = {o["metadata"]["name"]: o["spec"] for o in k8s_objects(k8s_manifests) if o["kind"] == "NetworkPolicy"}
    deny = policies["default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    dns, = policies["dns"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53} and policies["dns"]["policyTypes"] == ["Egress"]
    egress, ingress = policy_flows(k8s_manifests)
    inside = {"shopguide-worker", "shopguide-finetune", "triton"}
    assert {flow for flow in egress if flow[0] in inside} | {flow for flow in ingress if flow[1] in inside} == FLOWS
    # a flow between two pods of the namespace needs both sides: egress of one, ingress of the other
    both_inside = {flow for flow in FLOWS if flow[0] in inside and flow[1] in inside}
    assert both_inside <= egress and both_inside <= ingress
    assert {flow for flow in FLOWS if flow[0] in inside and flow[1] not in inside} <= egress
    assert {flow for flow in FLOWS if flow[0] not in inside} <= ingress


def test_k8s_policy_ports_match_the_containers_and_settings(k8s_manifests):
    env = next(o for o in k8s_objects(k8s_manifests) if o["metadata"]["name"].startswith("shopguide-env"))["data"]
    kafka_ports = {int(server.rsplit(":", 1)[1]) for server in env["SHOPGUIDE_BOOTSTRAP_SERVERS"].split(",")}
    assert kafka_ports == {port for _, peer, port in FLOWS if peer == "kafka"}
    pods = k8s_pods(k8s_manifests)
    for _, target, port in FLOWS:
        if target in pods:
            ports = {p["containerPort"] for c in pods[target]["spec"]["containers"] for p in c.get("ports", [])}
            assert port in ports, (target, port)


def test_worker_down_alert_counts_the_deployed_replicas_and_fires_on_absence():
    """DNS discovery drops a dead worker's target: `up == 0` never fires, so the rule counts the
    workers that answer against the replicas deployed in compose and Kubernetes."""
    rules = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    expected = int(re.fullmatch(r'count\(up\{job="shopguide-worker"\} == 1\) < (\d+)', rules["ShopguideWorkerDown"].strip())[1])
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    replicas = {entry["name"]: entry["count"] for entry in kustomization["replicas"]}
    assert expected == replicas["shopguide-worker"] == compose_services()["worker"]["deploy"]["replicas"]
    assert rules["ShopguideWorkersGone"].strip() == 'absent(up{job="shopguide-worker"} == 1)'
    assert "absent(" in rules["ShopguideTritonDown"]
