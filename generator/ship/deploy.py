"""Kubernetes and KServe manifests for a model repository in S3.

    o = DeployOptions(S3Location.parse("s3://minio:9000/models/prod"))
    manifests = make_manifests("k8s", o)
    check(manifests, "1.30")     # schema validation, no cluster needed
    write(manifests, Path("deploy"))

Each manifest comes from a template of ``templates/k8s`` (Jinja2, StrictUndefined; the values
are computed here, the templates only place them), is parsed back into a dict, and is validated
before anything is written: the Kubernetes resources against the JSON schemas of a named
Kubernetes version shipped inside the kubernetes-validate package (strict: unknown fields are
errors), the InferenceService against KServe's CRD schema (``templates/k8s/*.schema.json``,
unknown fields forbidden too) plus the facts gen-repo relies on (modelFormat triton, a pinned
runtimeVersion, the S3 storageUri, the /dev/shm volume).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .. import __version__, progress
from ..templates import jinja_environment, templates_dir
from ..errors import GenRepoError, SpecError
from ..repository.s3 import DEFAULT_REGION, S3Location, is_s3_url

KSERVE_SCHEMA = "kserve-inferenceservice-v1beta1.schema.json"  # in templates/k8s
DEFAULT_IMAGE = "gen-repo/tritonserver:24.10-torch2.15.0"  # the image docker/ builds
K8S_VERSION = "1.30"
TARGETS = ("k8s", "kserve")
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
EXIT_TIMEOUT_S = 30  # tritonserver --exit-timeout-secs: in-flight requests finish on SIGTERM
NAME_RE = re.compile(r"[a-z]([-a-z0-9]{0,43}[a-z0-9])?")  # DNS-1035 label, room for suffixes
NAMESPACE_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
QUANTITY_RE = re.compile(r"([0-9]+(\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?")
UNITS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
         "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
LOOPBACK = re.compile(r"(localhost|127\.[0-9.]+|0\.0\.0\.0)")


class ManifestError(GenRepoError, ValueError):
    """A rendered manifest does not pass its schema."""


@dataclass(frozen=True)
class DeployOptions:
    location: S3Location
    name: str = "triton"
    namespace: str | None = None
    image: str = DEFAULT_IMAGE
    replicas: int = 1
    max_replicas: int | None = None  # None: twice --replicas
    cpu_target: int = 70  # percent of the CPU request, for the autoscaler
    gpus: int = 0  # nvidia.com/gpu per replica
    cpu: str = "2"
    memory: str = "8Gi"
    shm_size: str = "1Gi"
    secret_name: str | None = None  # an existing Secret; None: <name>-s3, template written
    region: str = DEFAULT_REGION
    poll_secs: int = 0  # 0: load every model at start (model-control-mode none)
    service_type: str = "ClusterIP"
    startup_seconds: int = 600
    k8s_version: str = K8S_VERSION

    @property
    def secret(self) -> str:
        return self.secret_name or f"{self.name}-s3"

    @property
    def max(self) -> int:
        return self.max_replicas if self.max_replicas is not None else 2 * self.replicas


def quantity_bytes(text: str, flag: str) -> float:
    m = QUANTITY_RE.fullmatch(str(text))
    if not m:
        raise SpecError(f"{flag} '{text}' is not a Kubernetes quantity.",
                        "Examples: 512Mi, 8Gi, 2 (CPUs), 500m (half a CPU).")
    return float(m.group(1)) * UNITS[m.group(3)]


def image_tag(image: str) -> str | None:
    """The tag of an image reference ('repo/name:tag' -> 'tag'; no tag or a digest -> None)."""
    if "@" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else None


def check_options(o: DeployOptions) -> None:
    if not NAME_RE.fullmatch(o.name):
        raise SpecError(f"--name '{o.name}' is not a valid name here.",
                        "Use up to 45 lowercase letters, digits and '-', starting with a letter"
                        " (a DNS-1035 label, as KServe requires), e.g. --name resnet-triton.")
    if o.namespace is not None and not NAMESPACE_RE.fullmatch(o.namespace):
        raise SpecError(f"--namespace '{o.namespace}' is not a valid namespace.",
                        "Use lowercase letters, digits and '-', e.g. --namespace inference.")
    if o.secret_name is not None and not NAMESPACE_RE.fullmatch(o.secret_name):
        raise SpecError(f"--secret-name '{o.secret_name}' is not a valid Secret name.",
                        "Use lowercase letters, digits and '-'.")
    if o.replicas < 1 or o.max < o.replicas:
        raise SpecError(f"--replicas {o.replicas} / --max-replicas {o.max} must satisfy"
                        " 1 <= replicas <= max-replicas.",
                        "Example: --replicas 3 --max-replicas 10")
    for flag, value, low, high in (("--gpus-per-replica", o.gpus, 0, 64),
                                   ("--cpu-target", o.cpu_target, 1, 1000),
                                   ("--poll-secs", o.poll_secs, 0, 86400),
                                   ("--startup-seconds", o.startup_seconds, 10, 86400)):
        if not low <= value <= high:
            raise SpecError(f"{flag} {value} is out of range ({low}..{high}).",
                            f"Pass {flag} between {low} and {high}.")
    quantity_bytes(o.cpu, "--cpu")
    memory = quantity_bytes(o.memory, "--memory")
    shm = quantity_bytes(o.shm_size, "--shm-size")
    if shm >= memory:
        raise SpecError(f"--shm-size {o.shm_size} must be below --memory {o.memory}: a"
                        " memory-backed /dev/shm counts against the container's memory limit.",
                        "Raise --memory or lower --shm-size.")
    tag = image_tag(o.image)
    if not tag and "@" not in o.image or tag == "latest":
        raise SpecError(f"--image '{o.image}' is not pinned to a version.",
                        f"Name a tag or digest, e.g. --image {DEFAULT_IMAGE}; every replica must"
                        " run the same server.")
    if o.service_type not in SERVICE_TYPES:
        raise SpecError(f"--service-type '{o.service_type}' is not one of"
                        f" {', '.join(SERVICE_TYPES)}.", "Example: --service-type LoadBalancer")
    supported = k8s_versions()
    if o.k8s_version not in supported:
        raise SpecError(f"--k8s-version '{o.k8s_version}' has no schemas here (this"
                        f" kubernetes-validate has {', '.join(supported)}).",
                        f"Pass one of those, e.g. --k8s-version {K8S_VERSION}.")


def k8s_versions() -> list[str]:
    from kubernetes_validate.utils import all_versions, major_minor

    return list(dict.fromkeys(major_minor(v) for v in all_versions()))


def endpoint_warnings(location: S3Location) -> list[str]:
    host = (location.endpoint or "").rsplit(":", 1)[0]
    if LOOPBACK.fullmatch(host):
        return [f"the S3 endpoint {location.endpoint} is a loopback address: inside the cluster"
                " it is each pod's own, not your store. Pass the address the pods reach it at,"
                f" e.g. --repo s3://minio.minio.svc.cluster.local:9000/{location.bucket_path}"]
    return []


# ---------------------------------------------------------------------------------------------
# rendering


def triton_args(o: DeployOptions) -> list[str]:
    args = [f"--model-repository={o.location.triton_url}"]
    if o.poll_secs:
        args += ["--model-control-mode=poll", f"--repository-poll-secs={o.poll_secs}"]
    else:
        args += ["--model-control-mode=none"]
    return args + [f"--{kind}-port={port}" for kind, port in PORTS.items()] + [
        f"--exit-timeout-secs={EXIT_TIMEOUT_S}", "--log-verbose=0"]


def control_note(o: DeployOptions) -> str:
    if o.poll_secs:
        return (f"Model control: poll every {o.poll_secs} s, so pushes go live without a restart;"
                " Triton's docs advise against polling in production (a poll can catch a push"
                " half done).")
    return ("Model control: every model is loaded at start and never changes; after a gen-repo"
            f" push, `kubectl rollout restart deployment/{o.name}` rolls the new models out.")


def resources(o: DeployOptions) -> dict:
    limits = {"memory": o.memory}
    if o.gpus:
        limits["nvidia.com/gpu"] = o.gpus
    return {"requests": {"cpu": o.cpu, "memory": o.memory}, "limits": limits}


def metadata(o: DeployOptions, name: str, annotations: dict | None = None) -> dict:
    meta = {"name": name}
    if o.namespace:
        meta["namespace"] = o.namespace
    meta["labels"] = {"app.kubernetes.io/name": o.name,
                      "app.kubernetes.io/component": "inference-server",
                      "app.kubernetes.io/part-of": "gen-repo"}
    if annotations:
        meta["annotations"] = annotations
    return meta


def kserve_secret_annotations(o: DeployOptions) -> dict:
    """What KServe's storage initializer reads from the Secret to reach the bucket."""
    notes = {"serving.kserve.io/s3-region": o.region}
    if o.location.endpoint:
        notes["serving.kserve.io/s3-endpoint"] = o.location.endpoint
        notes["serving.kserve.io/s3-usehttps"] = "1" if o.location.https else "0"
    return notes


def secret_commands(o: DeployOptions, annotations: dict) -> list[str]:
    ns = f" -n {o.namespace}" if o.namespace else ""
    lines = [f"kubectl create secret generic {o.secret}{ns} \\",
             "  --from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=..."]
    if annotations:
        lines.append(f"kubectl annotate secret {o.secret}{ns} "
                     + " ".join(f"{k}={v}" for k, v in annotations.items()))
    return lines


def _yaml_filter(value, indent: int) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=False, sort_keys=False, width=1000)
    return "\n".join(" " * indent + line for line in text.rstrip("\n").splitlines())


def k8s_dir() -> Path:
    """templates/k8s, wherever gen-repo is installed (package data, see generator.templates)."""
    return templates_dir() / "k8s"


@lru_cache(maxsize=1)
def _env():
    env = jinja_environment(k8s_dir())
    env.filters["yaml"] = _yaml_filter
    return env


@dataclass(frozen=True)
class Manifest:
    path: str  # relative to the output directory
    text: str
    doc: dict

    @property
    def title(self) -> str:
        return f"{self.doc.get('kind')} {self.doc.get('metadata', {}).get('name')}"


def from_template(template: str, path: str, **values) -> Manifest:
    """One resource: ``template`` rendered with ``values`` and parsed back (``path``: where it is
    written)."""
    import yaml

    text = _env().get_template(template).render(**values)
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ManifestError(f"{path} rendered from {template} is not YAML: {e}.",
                            "This is a gen-repo bug; please report it.") from e
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ManifestError(f"{path} rendered from {template} holds {len(docs)} documents, not"
                            " one resource.", "This is a gen-repo bug; please report it.")
    return Manifest(path, text, docs[0])


def make_manifests(target: str, o: DeployOptions,
                   command: str = "gen-repo deploy") -> list[Manifest]:
    """The manifests of ``target`` ("k8s" or "kserve"), rendered and parsed, not yet checked."""
    if target not in TARGETS:
        raise SpecError(f"unknown deploy target '{target}'.", f"Use one of {', '.join(TARGETS)}.")
    check_options(o)
    common = dict(header=f"Written by gen-repo {__version__}: {command}",
                  name=o.name, replicas=o.replicas, max_replicas=o.max,
                  cpu_target=o.cpu_target, image=o.image, shm_size=o.shm_size,
                  resources=resources(o), secret_name=o.secret)
    out = []
    if target == "k8s":
        labels = metadata(o, o.name)["labels"]
        selector = {"app.kubernetes.io/name": o.name}
        out.append(from_template("deployment.yaml.j2", "deployment.yaml", **common,
                                 metadata=metadata(o, o.name), labels=labels, selector=selector,
                                 repository=o.location.triton_url, control_note=control_note(o),
                                 args=triton_args(o), region=o.region, ports=PORTS,
                                 grace_seconds=EXIT_TIMEOUT_S + 10,
                                 startup_seconds=o.startup_seconds,
                                 startup_probes=max(1, o.startup_seconds // 10)))
        out.append(from_template("service.yaml.j2", "service.yaml", **common,
                                 metadata=metadata(o, o.name), selector=selector, ports=PORTS,
                                 service_type=o.service_type))
        out.append(from_template("hpa.yaml.j2", "hpa.yaml", **common,
                                 metadata=metadata(o, o.name)))
        secret_notes: dict = {}
    else:
        account = f"{o.name}-storage"
        out.append(from_template("serviceaccount.yaml.j2", "serviceaccount.yaml", **common,
                                 metadata=metadata(o, account)))
        out.append(from_template("inferenceservice.yaml.j2", "inferenceservice.yaml", **common,
                                 metadata=metadata(o, o.name), service_account=account,
                                 runtime_version=image_tag(o.image) or "",
                                 storage_uri=o.location.storage_uri))
        secret_notes = kserve_secret_annotations(o)
    if o.secret_name is None:
        out.append(from_template("secret.yaml.j2", f"secret/{o.secret}.yaml", **common,
                                 metadata=metadata(o, o.secret, secret_notes),
                                 commands=secret_commands(o, secret_notes)))
    return out


# ---------------------------------------------------------------------------------------------
# validation


def _strict(schema):
    """A copy of a CRD schema in which objects with listed properties allow no others."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=1)
def _kserve_validator():
    import jsonschema

    schema = _strict(json.loads((k8s_dir() / KSERVE_SCHEMA).read_text()))
    return jsonschema.Draft7Validator(schema)


def _dig(doc, path: str):
    for part in path.split("."):
        if isinstance(doc, list):
            doc = doc[int(part)] if part.isdigit() and int(part) < len(doc) else None
        else:
            doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def kserve_problems(doc: dict) -> list[str]:
    """Schema errors, then the facts gen-repo sets, of an InferenceService (empty: it is fine)."""
    problems = [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                for e in sorted(_kserve_validator().iter_errors(doc), key=lambda e: e.path)]
    predictor = _dig(doc, "spec.predictor") or {}
    model = predictor.get("model") or {}
    version = model.get("runtimeVersion")
    facts = {
        "apiVersion is serving.kserve.io/v1beta1":
            doc.get("apiVersion") == "serving.kserve.io/v1beta1",
        "kind is InferenceService": doc.get("kind") == "InferenceService",
        "model.modelFormat.name is triton": _dig(model, "modelFormat.name") == "triton",
        "model.runtimeVersion is pinned to the image's tag":
            bool(version) and version != "latest" and version == image_tag(model.get("image", "")),
        "model.storageUri is s3://": is_s3_url(model.get("storageUri", "")),
        "model.resources.limits.memory is set": bool(_dig(model, "resources.limits.memory")),
        "predictor.serviceAccountName is set": bool(predictor.get("serviceAccountName")),
        "/dev/shm is a memory volume": _shm_mounted(predictor, model),
    }
    return problems + [f"spec.predictor: {what}: not so" for what, ok in facts.items() if not ok]


def _shm_mounted(pod: dict, container: dict) -> bool:
    mounts = {m.get("name") for m in container.get("volumeMounts", [])
              if m.get("mountPath") == "/dev/shm"}
    return any(v.get("name") in mounts and _dig(v, "emptyDir.medium") == "Memory"
               for v in pod.get("volumes", []))


def check(manifests: list[Manifest], k8s_version: str = K8S_VERSION) -> None:
    """Validate every manifest; raise ManifestError naming each failure."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    failures = []
    for m in manifests:
        doc = m.doc
        if str(doc.get("apiVersion", "")).startswith("serving.kserve.io/"):
            failures += [f"{m.path}: {p}" for p in kserve_problems(doc)]
            continue
        pod = _dig(doc, "spec.template.spec") or {}
        if doc.get("kind") == "Deployment" and \
                not _shm_mounted(pod, _dig(pod, "containers.0") or {}):
            failures.append(f"{m.path}: /dev/shm is not a memory volume")
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            failures.append(f"{m.path}: {'.'.join(map(str, e.path)) or '(top)'}: {e.message}")
        except SchemaNotFoundError as e:
            failures.append(f"{m.path}: {e.message}")
    if failures:
        raise ManifestError(
            f"{len(failures)} problem(s) in the generated manifests (Kubernetes {k8s_version}"
            " schemas, strict):\n  " + "\n  ".join(failures),
            "Check the values passed (--image, --cpu, --memory, ...); if they look right, this"
            " is a gen-repo bug: please report it with this message.")


# ---------------------------------------------------------------------------------------------
# writing


def write(manifests: list[Manifest], out: Path) -> list[Path]:
    """Write each manifest atomically (a temporary file renamed over it); returns the paths."""
    written = []
    for m in manifests:
        path = out / m.path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(m.text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(path)
    return written


def deploy(target: str, o: DeployOptions, out: Path,
           command: str = "gen-repo deploy") -> list[Manifest]:
    """Make, validate and write the manifests of ``target``; nothing is written on failure."""
    for w in endpoint_warnings(o.location):
        progress.warn(w)
    manifests = make_manifests(target, o, command)
    check(manifests, o.k8s_version)
    write(manifests, out)
    return manifests
