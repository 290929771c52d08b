"""gen-repo deploy: manifests rendered from templates, parsed back, and validated without a cluster.

The Kubernetes resources are validated (strict: unknown fields are errors) against the schemas of a
named Kubernetes version that the kubernetes-validate wheel ships; these tests forbid every network
connection except to 127.0.0.1, so that validation provably needs no download.
"""

from __future__ import annotations

import copy
import socket
from dataclasses import replace
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from generator.ship import deploy as dep
from generator.errors import SpecError
from generator.repository.s3 import S3Location

K8S = "1.30"
REPO = "s3://minio.minio.svc:9000/models/prod"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail any connection to anything but 127.0.0.1 / ::1 (schemas must come from the wheel)."""
    real = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"network connection attempted to {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def options(**kw) -> dep.DeployOptions:
    return dep.DeployOptions(location=S3Location.parse(kw.pop("repo", REPO)), **kw)


def by_kind(manifests) -> dict[str, dict]:
    return {m.doc["kind"]: m.doc for m in manifests}


def container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def load_dir(out: Path) -> dict[str, dict]:
    """Every YAML file under ``out``, parsed: {relative path: document}."""
    return {p.relative_to(out).as_posix(): yaml.safe_load(p.read_text())
            for p in sorted(out.rglob("*.yaml"))}


# ---------------------------------------------------------------------------------------------
# k8s


@pytest.mark.parametrize("kw", [
    {},
    {"replicas": 3, "gpus": 1, "namespace": "inference", "service_type": "LoadBalancer"},
    {"poll_secs": 30, "secret_name": "shared-s3", "max_replicas": 10, "cpu": "500m",
     "memory": "2Gi", "shm_size": "512Mi"},
    {"repo": "s3://models/prod", "image": "registry.example.com/triton@sha256:" + "a" * 64},
], ids=["defaults", "gpu-namespace", "poll-existing-secret", "aws-s3-digest"])
def test_k8s_manifests_pass_strict_schema_validation(kw):
    manifests = dep.make_manifests("k8s", options(**kw))
    dep.check(manifests, K8S)
    for m in manifests:  # and independently of dep.check, straight through the validator
        assert kubernetes_validate.validate(m.doc, K8S, strict=True) == K8S


def test_deployment_runs_triton_on_the_s3_repository():
    o = options(replicas=3, gpus=2)
    kinds = by_kind(dep.make_manifests("k8s", o))
    d = kinds["Deployment"]
    c = container(d)
    assert d["spec"]["replicas"] == 3
    assert c["image"] == dep.DEFAULT_IMAGE and c["command"] == ["tritonserver"]
    assert f"--model-repository={REPO}" in c["args"]
    assert "--model-control-mode=none" in c["args"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == \
        {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] == 600
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert c["resources"]["requests"] == {"cpu": "2", "memory": "8Gi"}
    # /dev/shm: a memory-backed emptyDir of the asked size, mounted at /dev/shm
    volume = d["spec"]["template"]["spec"]["volumes"][0]
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
    assert {"name": volume["name"], "mountPath": "/dev/shm"} in c["volumeMounts"]
    # credentials from the Secret, never inline
    env = {e["name"]: e for e in c["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "triton-s3", "key": key}
    assert env["AWS_DEFAULT_REGION"]["value"] == "us-east-1"
    assert d["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


def test_no_gpu_request_unless_asked():
    c = container(by_kind(dep.make_manifests("k8s", options()))["Deployment"])
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert "nvidia.com/gpu" not in c["resources"]["requests"]


def test_poll_mode_sets_triton_flags():
    c = container(by_kind(dep.make_manifests("k8s", options(poll_secs=30)))["Deployment"])
    assert "--model-control-mode=poll" in c["args"] and "--repository-poll-secs=30" in c["args"]


def test_https_endpoint_keeps_triton_https_form():
    o = dep.DeployOptions(location=S3Location.parse("s3://models/prod", "https://s3.example.com"))
    c = container(by_kind(dep.make_manifests("k8s", o))["Deployment"])
    assert "--model-repository=s3://https://s3.example.com:443/models/prod" in c["args"]


def test_service_and_hpa_select_the_deployment():
    kinds = by_kind(dep.make_manifests("k8s", options(replicas=3, max_replicas=9, cpu_target=60)))
    labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selector = kinds["Service"]["spec"]["selector"]
    assert all(labels[k] == v for k, v in selector.items())
    assert kinds["Deployment"]["spec"]["selector"]["matchLabels"] == selector
    assert {p["name"]: p["port"] for p in kinds["Service"]["spec"]["ports"]} == \
        {"http": 8000, "grpc": 8001, "metrics": 8002}
    hpa = kinds["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "triton"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 9)
    target = hpa["spec"]["metrics"][0]["resource"]
    assert target["name"] == "cpu" and target["target"]["averageUtilization"] == 60


def test_secret_is_a_placeholder_template_outside_the_applied_directory():
    manifests = dep.make_manifests("k8s", options())
    secret = next(m for m in manifests if m.doc["kind"] == "Secret")
    assert secret.path == "secret/triton-s3.yaml"  # `kubectl apply -f deploy/` skips it
    assert set(secret.doc["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(v.startswith("REPLACE_WITH_") for v in secret.doc["stringData"].values())
    assert "kubectl create secret generic triton-s3" in secret.text


def test_existing_secret_gets_no_template():
    manifests = dep.make_manifests("k8s", options(secret_name="prod-s3"))
    assert "Secret" not in by_kind(manifests)
    env = container(by_kind(manifests)["Deployment"])["env"]
    assert env[0]["valueFrom"]["secretKeyRef"]["name"] == "prod-s3"


def test_check_reports_an_invalid_deployment():
    manifests = dep.make_manifests("k8s", options())
    broken = []
    for m in manifests:
        doc = copy.deepcopy(m.doc)
        if doc["kind"] == "Deployment":
            container(doc)["livenessProbe"]["httpGet"]["pth"] = "/typo"  # unknown field
            doc["spec"]["replicas"] = "three"  # wrong type
        broken.append(replace(m, doc=doc))
    with pytest.raises(dep.ManifestError) as e:
        dep.check(broken, K8S)
    assert "deployment.yaml" in e.value.message and "1.30" in e.value.message
    assert e.value.tip


def test_check_requires_the_shm_volume():
    manifests = dep.make_manifests("k8s", options())
    docs = []
    for m in manifests:
        doc = copy.deepcopy(m.doc)
        if doc["kind"] == "Deployment":
            container(doc)["volumeMounts"] = []
        docs.append(replace(m, doc=doc))
    with pytest.raises(dep.ManifestError, match="/dev/shm"):
        dep.check(docs, K8S)


# ---------------------------------------------------------------------------------------------
# kserve


def test_kserve_inference_service():
    manifests = dep.make_manifests("kserve", options(replicas=2, gpus=1))
    dep.check(manifests, K8S)
    kinds = by_kind(manifests)
    isvc = kinds["InferenceService"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "triton"
    assert model["runtimeVersion"] == "24.10-torch2.15.0" == dep.image_tag(model["image"])
    assert model["storageUri"] == "s3://models/prod"  # KServe's form; the endpoint is in the Secret
    assert model["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert dep.kserve_problems(isvc) == []
    account = isvc["spec"]["predictor"]["serviceAccountName"]
    assert kinds["ServiceAccount"]["metadata"]["name"] == account
    assert kinds["ServiceAccount"]["secrets"] == [{"name": "triton-s3"}]
    notes = kinds["Secret"]["metadata"]["annotations"]
    assert notes["serving.kserve.io/s3-endpoint"] == "minio.minio.svc:9000"
    assert notes["serving.kserve.io/s3-usehttps"] == "0"
    for m in manifests:
        if m.doc["kind"] != "InferenceService":
            kubernetes_validate.validate(m.doc, K8S, strict=True)


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["spec"]["predictor"]["model"].update(modelFormt={"name": "triton"}),
     "'modelFormt' was unexpected"),
    (lambda d: d["spec"]["predictor"]["model"]["modelFormat"].update(name="onnx"),
     "modelFormat.name is triton"),
    (lambda d: d["spec"]["predictor"]["model"].pop("runtimeVersion"), "runtimeVersion is pinned"),
    (lambda d: d["spec"]["predictor"]["model"].update(runtimeVersion="latest"),
     "runtimeVersion is pinned"),
    (lambda d: d["spec"]["predictor"]["model"].update(storageUri="pvc://x"), "storageUri is s3://"),
    (lambda d: d["spec"]["predictor"].pop("volumes"), "/dev/shm"),
    (lambda d: d["spec"]["predictor"].update(minReplicas="2"), "is not of type 'integer'"),
    (lambda d: d["spec"]["predictor"]["model"]["resources"]["limits"].update(memory="8 GB"),
     "does not match"),
])
def test_kserve_check_catches(mutate, expected):
    isvc = copy.deepcopy(by_kind(dep.make_manifests("kserve", options()))["InferenceService"])
    mutate(isvc)
    problems = dep.kserve_problems(isvc)
    assert any(expected in p for p in problems), problems


# ---------------------------------------------------------------------------------------------
# options


@pytest.mark.parametrize("kw, words", [
    ({"name": "My_Triton"}, "--name"),
    ({"namespace": "Prod"}, "--namespace"),
    ({"replicas": 0}, "--replicas"),
    ({"replicas": 4, "max_replicas": 2}, "--max-replicas"),
    ({"gpus": -1}, "--gpus-per-replica"),
    ({"memory": "1Gi", "shm_size": "2Gi"}, "--shm-size"),
    ({"memory": "8 GB"}, "--memory"),
    ({"image": "nvcr.io/nvidia/tritonserver"}, "not pinned"),
    ({"image": "gen-repo/tritonserver:latest"}, "not pinned"),
    ({"k8s_version": "1.12"}, "--k8s-version"),
    ({"service_type": "Ingress"}, "--service-type"),
])
def test_bad_options_are_refused_with_a_tip(kw, words):
    with pytest.raises(SpecError) as e:
        dep.make_manifests("k8s", options(**kw))
    assert words in e.value.message and e.value.tip


def test_loopback_endpoint_warns():
    assert dep.endpoint_warnings(S3Location.parse("s3://127.0.0.1:9000/models/prod"))
    assert not dep.endpoint_warnings(S3Location.parse(REPO))


# ---------------------------------------------------------------------------------------------
# the command


def test_cli_writes_k8s_manifests_that_validate(run_cli, tmp_path):
    out = tmp_path / "deploy"
    code, stdout, err = run_cli("deploy", "k8s", "--repo", REPO, "--replicas", "3",
                                "--gpus-per-replica", "1", "--out", out)
    assert code == 0, err
    docs = load_dir(out)
    assert set(docs) == {"deployment.yaml", "service.yaml", "hpa.yaml", "secret/triton-s3.yaml"}
    for doc in docs.values():
        assert kubernetes_validate.validate(doc, K8S, strict=True) == K8S
    assert "kubectl apply -f" in stdout and "Kubernetes 1.30" in stdout
    assert not list(out.rglob(".*"))  # no temporary files left behind


def test_cli_writes_kserve_manifests_that_validate(run_cli, tmp_path):
    out = tmp_path / "deploy"
    code, stdout, err = run_cli("deploy", "kserve", "--repo", "s3://models/prod", "--endpoint-url",
                                "http://minio.minio:9000", "--out", out)
    assert code == 0, err
    docs = load_dir(out)
    assert set(docs) == {"inferenceservice.yaml", "serviceaccount.yaml", "secret/triton-s3.yaml"}
    assert dep.kserve_problems(docs["inferenceservice.yaml"]) == []
    for name in ("serviceaccount.yaml", "secret/triton-s3.yaml"):
        kubernetes_validate.validate(docs[name], K8S, strict=True)


def test_cli_bad_flag_writes_nothing(run_cli, tmp_path):
    out = tmp_path / "deploy"
    code, _, err = run_cli("deploy", "k8s", "--repo", REPO, "--memory", "1Gi", "--shm-size",
                           "4Gi", "--out", out)
    assert code == 2
    assert "ERROR: --shm-size 4Gi must be below --memory 1Gi" in err and "TIP:" in err
    assert not out.exists()


def test_cli_invalid_manifest_writes_nothing(run_cli, tmp_path, monkeypatch):
    out = tmp_path / "deploy"
    real = dep.from_template

    def broken(template, path, **values):  # a template that renders an invalid resource
        m = real(template, path, **values)
        if m.doc["kind"] == "Service":
            m.doc["spec"]["ports"][0]["port"] = "http"
        return m

    monkeypatch.setattr(dep, "from_template", broken)
    code, _, err = run_cli("deploy", "k8s", "--repo", REPO, "--out", out)
    assert code == 1 and "service.yaml: spec.ports.0.port" in err
    assert not out.exists()


def test_cli_bad_repo_url(run_cli, tmp_path):
    code, _, err = run_cli("deploy", "k8s", "--repo", "s3://Models_Bucket/x", "--out", tmp_path)
    assert code == 2 and "not a valid bucket name" in err and "TIP:" in err
