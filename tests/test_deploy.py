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
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", images["triton"])
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
            assert re.fullmatch(r"\d+:\d+", port), (name, port)
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
    assert triton["seed-repository"] == expected["shopguide-worker"]
    everything = [image for pod in (worker, finetune, triton) for image in pod.values()]
    assert not [image for image in everything if image.startswith("shopguide")]


def test_compose_replicates_every_topic_three_times_with_two_in_sync():
    compose = yaml.safe_load(COMPOSE.read_text())
    brokers = {name: svc["environment"] for name, svc in compose["services"].items()
               if svc["image"].startswith("apache/kafka:")}
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
