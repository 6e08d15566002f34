"""deploy/kubernetes/, checked statically (no cluster runs here): every manifest validates against the Kubernetes
API schemas (kubernetes-validate bundles them) and KEDA's resources against the KEDA schema shipped beside them;
and the manifests agree with the code, which is where every expected value below comes from:

- the settings the manifests give (the ConfigMap's ``streamer.toml`` and environment, through ``config.load``);
- the variables the config accepts (``config.schema.KNOWN_ENV``), the metrics the worker registers, the HTTP
  paths both engines serve, the exit codes of ``core.errors``;
- the drain bound (``worker.drain_timeout_s``) and the broker wait (``kafka.startup_timeout_s``) as configured;
- the partition count (``kafka.partitions``), which caps the autoscalers, and the figures of the simulation that
  chose their threshold and window (``bench/results/autoscale.jsonl``).

The kustomizations are resolved here by a small resolver of the kustomize fields they use (resources,
namespace, configMapGenerator); a field it does not know fails the test rather than being ignored.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml
from kubernetes_validate.utils import all_versions

from streamer import config
from streamer.config.schema import KNOWN_ENV
from streamer.core import errors
from tests.unit.test_deploy_static import COMPOSE, DOCKERFILE, exported_metric_names, metric_names

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
KEDA_SCHEMA = K8S / "schemas" / "keda-v2.15.schema.json"
# The oldest Kubernetes the manifests claim (a podFailurePolicy rule without onPodConditions needs 1.29), and the
# newest one kubernetes-validate bundles.
OLDEST = "1.29"
# Manifests applied on their own (not by a kustomization), and files that are not Kubernetes resources.
STANDALONE = {"jobs/publish-model.yaml", "secret.example.yaml"}
NOT_RESOURCES = {"hpa/prometheus-adapter-rules.yaml"}
# After the drain: commit, leave the group, stop Faust's services, flush the producer (measured: 4 workers stopped
# 6.3-6.4 s after SIGTERM with a backlog, drain included, on a busy 2-core machine; scale_steps.jsonl "stop_s").
STOP_MARGIN_S = 10


# ------------------------------------------------------------------------------------------------ kustomize


KNOWN_FIELDS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator"}
NAMESPACED = {"Namespace": False, "PersistentVolume": False, "ClusterTriggerAuthentication": False}


def build(directory: Path) -> list[dict[str, Any]]:
    """The resources ``kubectl apply -k directory`` creates (generated names without their hash suffix)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_FIELDS
    assert not unknown, f"{directory}: kustomize fields {unknown} are not understood by this test's resolver"
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            resources += build(path)
        else:
            resources += [r for r in yaml.safe_load_all(path.read_text()) if r]
    for generator in kustomization.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for name in generator.get("files", []):
            data[Path(name).name] = (directory / name).read_text()
        for name in generator.get("envs", []):
            data |= env_file(directory / name)
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        resources.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}
        )
    if "namespace" in kustomization:
        for resource in resources:
            if NAMESPACED.get(resource["kind"], True):
                resource["metadata"]["namespace"] = kustomization["namespace"]
    return resources


def env_file(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


FLAVOURS = {"keda": K8S, "hpa": K8S / "hpa"}


@cache
def flavour(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(build(FLAVOURS[name]))


def one(resources: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def standalone(path: str) -> dict[str, Any]:
    return yaml.safe_load((K8S / path).read_text())


def every_resource() -> list[tuple[str, dict[str, Any]]]:
    seen: dict[str, tuple[str, dict[str, Any]]] = {}
    for name in FLAVOURS:
        for resource in flavour(name):
            seen[f"{resource['kind']}/{resource['metadata']['name']}"] = (name, resource)
    for path in sorted(STANDALONE):
        resource = standalone(path)
        seen[f"{resource['kind']}/{resource['metadata'].get('name') or path}"] = (path, resource)
    return sorted(seen.values(), key=lambda item: (item[1]["kind"], str(item[1]["metadata"].get("name"))))


def test_every_file_is_applied_by_a_kustomization_or_named_here() -> None:
    """No manifest is left out of what ``kubectl apply -k`` creates (and so out of the checks below)."""
    listed: set[str] = set()

    def walk(directory: Path) -> None:
        listed.add(str((directory / "kustomization.yaml").relative_to(K8S)))
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        for entry in kustomization.get("resources", []):
            path = (directory / entry).resolve()
            walk(path) if path.is_dir() else listed.add(str(path.relative_to(K8S)))
        for generator in kustomization.get("configMapGenerator", []):
            listed.update(str((directory / f).relative_to(K8S)) for f in generator.get("files", []))
            listed.update(str((directory / f).relative_to(K8S)) for f in generator.get("envs", []))

    for directory in FLAVOURS.values():
        walk(directory)
    files = {str(p.relative_to(K8S)) for p in K8S.rglob("*") if p.is_file() and p.parent.name != "schemas"}
    assert files - listed - STANDALONE - NOT_RESOURCES == set()
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "PersistentVolumeClaim", "Job"} <= {
        r["kind"] for r in flavour("keda")
    }
    assert {r["kind"] for r in flavour("keda")} - {r["kind"] for r in flavour("hpa")} == {
        "ScaledObject",
        "TriggerAuthentication",
    }
    assert {r["kind"] for r in flavour("hpa")} - {r["kind"] for r in flavour("keda")} == {"HorizontalPodAutoscaler"}


# ------------------------------------------------------------------------------------------------ schemas


def keda_validator() -> jsonschema.Draft202012Validator:
    """KEDA's schema, with the Kubernetes definitions it refers to (ObjectMeta, the HPA behaviour)."""
    latest = all_versions()[-1]
    definitions = json.loads(
        (
            Path(kubernetes_validate.__file__).parent
            / f"kubernetes-json-schema/v{latest}-local-strict/_definitions.json"
        ).read_text()
    )
    registry = referencing.Resource.from_contents(definitions) @ referencing.Registry()
    schema = json.loads(KEDA_SCHEMA.read_text())
    return jsonschema.Draft202012Validator(schema, registry=registry)


@pytest.mark.parametrize("version", [OLDEST, all_versions()[-1]])
def test_every_manifest_validates_against_the_kubernetes_and_keda_schemas(version: str) -> None:
    keda = keda_validator()
    checked = 0
    for where, resource in every_resource():
        meta = resource["metadata"]
        name = f"{where}: {resource['kind']}/{meta.get('name') or meta.get('generateName')}"
        if resource["apiVersion"].startswith("keda.sh/"):
            problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in keda.iter_errors(resource)]
            assert problems == [], f"{name}: {problems}"
        else:
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name} (Kubernetes {version}): {'/'.join(map(str, exc.path))}: {exc.message}")
        checked += 1
    assert checked >= 12


def test_the_keda_schema_refuses_what_keda_would_ignore_or_refuse() -> None:
    """The schema is strict where KEDA is lax (a misspelt trigger key) and as strict as KEDA on types."""
    keda = keda_validator()
    good = one(flavour("keda"), "ScaledObject")
    assert keda.is_valid(good)

    def broken(change: Any) -> dict[str, Any]:
        copy = json.loads(json.dumps(good))
        change(copy)
        return copy

    assert not keda.is_valid(broken(lambda r: r["spec"].update(maxReplicas=8)))
    assert not keda.is_valid(broken(lambda r: r["spec"]["triggers"][0]["metadata"].update(lagThreshhold="5")))
    assert not keda.is_valid(broken(lambda r: r["spec"]["triggers"][0]["metadata"].update(lagThreshold=5)))
    assert not keda.is_valid(broken(lambda r: r["spec"]["triggers"][0]["metadata"].update(allowIdleConsumers="no")))
    assert not keda.is_valid(
        broken(lambda r: r["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"].update(x=1))
    )
    assert not keda.is_valid(broken(lambda r: r["spec"].pop("scaleTargetRef")))


# ------------------------------------------------------------------------------------------------ the config


def worker_deployment(name: str = "keda") -> dict[str, Any]:
    return one(flavour(name), "Deployment", "streamer-worker")


def container(workload: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def environment(workload: dict[str, Any], resources: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """The container's environment: its envFrom ConfigMaps, then its env (secrets as placeholders)."""
    spec = container(workload)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        env |= one(resources, "ConfigMap", source["configMapRef"]["name"])["data"]
    for variable in spec.get("env", []):
        env[variable["name"]] = variable["value"] if "value" in variable else placeholder(variable["valueFrom"])
    return env


def placeholder(source: dict[str, Any]) -> str:
    """What stands for a value the cluster fills in: a secret's key, or a pod field (the pod's name)."""
    if "secretKeyRef" in source:
        return f"<{source['secretKeyRef']['key']}>"
    return f"<{source['fieldRef']['fieldPath']}>"


def config_file(workload: dict[str, Any], resources: tuple[dict[str, Any], ...], env: dict[str, str]) -> str:
    """The text of the file STREAMER_CONFIG names, found through the volume mounted at its directory."""
    path = Path(env["STREAMER_CONFIG"])
    mounts = {m["mountPath"]: m["name"] for m in container(workload)["volumeMounts"]}
    volume = next(v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == mounts[str(path.parent)])
    return one(resources, "ConfigMap", volume["configMap"]["name"])["data"][path.name]


def loaded_settings(tmp_path: Path, name: str = "keda") -> config.Settings:
    """The settings a worker of the manifests runs with (the model repository aside: it is the volume)."""
    resources = flavour(name)
    workload = worker_deployment(name)
    env = environment(workload, resources)
    path = tmp_path / "streamer.toml"
    path.write_text(config_file(workload, resources, env))
    return config.load(path, environ=env | {"STREAMER_MODELS_DIR": str(REPO / "models")})


@pytest.mark.parametrize("where", ["Deployment/streamer-worker", "Job/streamer-create-topics"])
def test_every_streamer_variable_is_one_the_config_accepts(where: str) -> None:
    kind, name = where.split("/")
    workload = one(flavour("keda"), kind, name)
    env = environment(workload, flavour("keda"))
    assert {v for v in env if v.startswith("STREAMER_")} - KNOWN_ENV == set()
    assert {"STREAMER_CONFIG", "STREAMER_KAFKA_BOOTSTRAP", "STREAMER_KAFKA_SASL_PASSWORD"} <= set(env)


def test_each_worker_pod_is_named_by_its_pod_in_model_events_logs_and_ready() -> None:
    env = environment(worker_deployment(), flavour("keda"))
    assert env["STREAMER_WORKER_NAME"] == "<metadata.name>"


def test_the_manifests_settings_load_and_keep_their_secrets_out_of_the_config_map(tmp_path: Path) -> None:
    settings = loaded_settings(tmp_path)
    assert settings.unknown_env == ()
    assert settings.kafka.client["sasl.password"] == "<kafka-sasl-password>"  # from the Secret
    assert settings.redis.password == "<redis-password>"
    for resource in flavour("keda"):
        if resource["kind"] == "ConfigMap":
            for key, text in resource["data"].items():
                assert not re.search(r"password\s*=|:[^@/\s]+@", text), f"{key} holds a secret"
    secret = standalone("secret.example.yaml")["stringData"]
    assert secret["kafka-sasl-username"] == settings.kafka.client["sasl.username"]
    referenced = {
        ref["secretKeyRef"]["key"]
        for workload in (worker_deployment(), one(flavour("keda"), "Job"))
        for ref in (v["valueFrom"] for v in container(workload).get("env", []) if "valueFrom" in v)
        if "secretKeyRef" in ref
    }
    referenced |= {
        item["key"]
        for volume in worker_deployment()["spec"]["template"]["spec"]["volumes"]
        if "secret" in volume
        for item in volume["secret"]["items"]
    }
    referenced |= {ref["key"] for ref in one(flavour("keda"), "TriggerAuthentication")["spec"]["secretTargetRef"]}
    assert referenced <= set(secret), referenced - set(secret)


def test_every_file_the_settings_name_is_mounted_where_they_say(tmp_path: Path) -> None:
    settings = loaded_settings(tmp_path)
    workload = worker_deployment()
    mounts = {m["mountPath"]: m for m in container(workload)["volumeMounts"]}
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    files = [settings.kafka.client["ssl.ca.location"], settings.redis.ssl_ca_certs]
    for file in map(Path, files):
        volume = volumes[mounts[str(file.parent)]["name"]]
        assert file.name in {item["path"] for item in volume["secret"]["items"]}
    models = mounts[environment(workload, flavour("keda"))["STREAMER_MODELS_DIR"]]
    assert models["readOnly"] and volumes[models["name"]]["persistentVolumeClaim"]["claimName"] == "streamer-models"


def test_the_root_filesystem_is_read_only_and_what_the_worker_writes_is_a_volume(tmp_path: Path) -> None:
    """The worker writes dev.state_dir (with Faust's data directory under it) and temporary files; nothing else."""
    settings = loaded_settings(tmp_path)
    workload = worker_deployment()
    pod = workload["spec"]["template"]["spec"]
    worker = container(workload)
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {
        m["mountPath"]
        for m in worker["volumeMounts"]
        if not m.get("readOnly") and "emptyDir" in next(v for v in pod["volumes"] if v["name"] == m["name"])
    }
    assert writable == {settings.dev.state_dir, "/tmp"}
    assert pod["securityContext"]["runAsNonRoot"] is True and worker["securityContext"]["capabilities"]["drop"] == [
        "ALL"
    ]
    assert worker["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["automountServiceAccountToken"] is False
    image_user = re.search(r"useradd --system --uid (\d+)", DOCKERFILE)
    assert image_user and pod["securityContext"]["runAsUser"] == int(image_user.group(1))
    assert {"cpu", "memory"} <= set(worker["resources"]["requests"]) and "memory" in worker["resources"]["limits"]


def test_the_image_is_the_one_compose_builds() -> None:
    images = {c["image"] for _, r in every_resource() for c in pod_containers(r) if c["name"] != "artifact"}
    assert images == {COMPOSE["services"]["worker"]["image"]}


def pod_containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    spec = resource.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


# ------------------------------------------------------------------------------------------------ probes, ports


def served_paths() -> dict[str, int]:
    """Each HTTP path a worker serves, with the number of modules serving it (both engines: two)."""
    counts: dict[str, int] = {}
    for module in (REPO / "streamer").rglob("*.py"):
        source = module.read_text()
        found = set(re.findall(r"\.page\(\s*\"(/[a-z]+)\"", source)) | set(re.findall(r"path == \"(/[a-z]+)\"", source))
        for path in found:
            counts[path] = counts.get(path, 0) + 1
    return counts


def test_probes_ports_and_scrape_annotations_are_what_the_worker_serves(tmp_path: Path) -> None:
    settings = loaded_settings(tmp_path)
    workload = worker_deployment()
    worker = container(workload)
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports == {"metrics": settings.worker.metrics_port, "oip": settings.worker.oip_port}
    assert settings.worker.metrics_host == settings.worker.oip_host == "0.0.0.0"  # reachable by the kubelet
    served = served_paths()
    probes = {kind: worker[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["path"] == "/ready"  # "assigned and scoring", not "process up"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/health"
    for kind, probe in probes.items():
        assert served.get(probe["path"], 0) >= 2, f"{kind}: {probe['path']} is not served by both engines"
        assert ports[probe["port"]] == settings.worker.metrics_port
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == settings.worker.metrics_port
    assert served.get(annotations["prometheus.io/path"], 0) >= 2
    service = one(flavour("keda"), "Service", "streamer-oip")
    assert [ports[p["targetPort"]] for p in service["spec"]["ports"]] == [settings.worker.oip_port]
    assert service["spec"]["selector"] == workload["spec"]["template"]["metadata"]["labels"]
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", DOCKERFILE, re.M) for p in line.split()}
    assert set(ports.values()) <= exposed


def test_every_metric_named_in_the_manifests_is_exported() -> None:
    named = set()
    for path in K8S.rglob("*"):
        if path.is_file() and path.parent.name != "schemas":
            named |= metric_names(path.read_text())
    assert named <= exported_metric_names(), named - exported_metric_names()


def test_the_grace_period_covers_the_drain_and_the_startup_probe_the_broker_wait(tmp_path: Path) -> None:
    """A pod killed before it drained and committed gets its requests re-read; a worker waiting for its broker
    (up to kafka.startup_timeout_s, before it serves /health) is starting, not dead."""
    settings = loaded_settings(tmp_path)
    pod = worker_deployment()["spec"]["template"]["spec"]
    worker = container(worker_deployment())
    pre_stop = worker["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = float(pre_stop[1]) + settings.worker.drain_timeout_s + STOP_MARGIN_S
    assert pod["terminationGracePeriodSeconds"] >= needed
    startup = worker["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= settings.kafka.startup_timeout_s
    compose_grace = float(COMPOSE["services"]["worker"]["stop_grace_period"].removesuffix("s"))
    assert compose_grace >= settings.worker.drain_timeout_s + STOP_MARGIN_S


def test_jobs_fail_at_once_only_on_an_operator_error() -> None:
    """A FatalError's exit (3-6) is recovered by a replacement; only the operator error (2) fails a Job at once."""
    fatal_codes = {cls.exit_code for cls in errors.FatalError.__subclasses__()}
    assert fatal_codes and 2 not in fatal_codes
    for _, resource in every_resource():
        for rule in resource.get("spec", {}).get("podFailurePolicy", {}).get("rules", []):
            codes = set(rule["onExitCodes"]["values"])
            assert codes == {2} and not codes & fatal_codes, resource["metadata"]


# ------------------------------------------------------------------------------------------------ scaling


def scaled_object() -> dict[str, Any]:
    return one(flavour("keda"), "ScaledObject")


def test_the_scaled_object_scales_the_workers_group_capped_at_the_partition_count(tmp_path: Path) -> None:
    settings = loaded_settings(tmp_path)
    spec = scaled_object()["spec"]
    [trigger] = spec["triggers"]
    metadata = trigger["metadata"]
    assert spec["scaleTargetRef"]["name"] == worker_deployment()["metadata"]["name"]
    assert spec["maxReplicaCount"] == settings.kafka.partitions, "replicas beyond the partitions stand idle"
    assert metadata["allowIdleConsumers"] == "false" and trigger["type"] == "kafka"
    assert metadata["topic"] == settings.topics.requests
    assert metadata["consumerGroup"] == settings.worker.group_id
    assert metadata["bootstrapServers"] == settings.kafka.bootstrap
    assert metadata["offsetResetPolicy"] == "earliest"  # the engines' auto.offset.reset
    client = settings.kafka.client
    assert metadata["tls"] == ("enable" if client["security.protocol"].endswith("SSL") else "disable")
    assert metadata["sasl"] == client["sasl.mechanism"].lower().replace("-", "_").replace("_sha_", "_sha")
    auth = one(flavour("keda"), "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"username", "password", "ca"}
    assert 1 < spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert "replicas" not in worker_deployment()["spec"], "the autoscaler owns the replica count"


def test_the_hpa_is_the_scaled_object_without_keda(tmp_path: Path) -> None:
    settings = loaded_settings(tmp_path, "hpa")
    hpa = one(flavour("hpa"), "HorizontalPodAutoscaler")["spec"]
    keda = scaled_object()["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (keda["minReplicaCount"], keda["maxReplicaCount"])
    assert hpa["behavior"] == keda["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert hpa["scaleTargetRef"]["name"] == keda["scaleTargetRef"]["name"]
    [metric] = hpa["metrics"]
    assert metric["external"]["target"] == {
        "type": "AverageValue",
        "averageValue": keda["triggers"][0]["metadata"]["lagThreshold"],
    }
    selector = metric["external"]["metric"]["selector"]["matchLabels"]
    assert selector == {"consumergroup": settings.worker.group_id, "topic": settings.topics.requests}
    adapter = yaml.safe_load((K8S / "hpa/prometheus-adapter-rules.yaml").read_text())
    [rule] = adapter["externalRules"]
    assert rule["name"]["as"] == metric["external"]["metric"]["name"]
    assert metric["external"]["metric"]["name"] in rule["seriesQuery"]


def test_rollouts_and_drains_never_hold_more_workers_than_partitions_nor_take_all_down() -> None:
    """A surge pod at the partition count would get no partition, never turn ready and stall the rollout."""
    workload = worker_deployment()
    assert workload["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    pdb = one(flavour("keda"), "PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"] == workload["spec"]["template"]["metadata"]["labels"]
    assert pdb["maxUnavailable"] < scaled_object()["spec"]["minReplicaCount"]


def test_the_shipped_threshold_and_window_are_a_row_of_the_last_simulation() -> None:
    """bench/autoscale.py simulates the shipped values beside the alternatives; a change of the manifests without
    a new run of it fails here."""
    spec = scaled_object()["spec"]
    shipped = {
        "lag_threshold": int(spec["triggers"][0]["metadata"]["lagThreshold"]),
        "scale_down_window_s": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
            "stabilizationWindowSeconds"
        ],
        "scale_up_window_s": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleUp"][
            "stabilizationWindowSeconds"
        ],
        "polling_interval_s": spec["pollingInterval"],
        "min_replicas": spec["minReplicaCount"],
        "max_replicas": spec["maxReplicaCount"],
    }
    lines = (REPO / "bench/results/autoscale.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    rows = [row["setting"] for row in last["rows"] if row["setting"].get("shipped")]
    assert rows and {k: rows[0][k] for k in shipped} == shipped
