"""gen-repo deploy k8s | kserve: manifests that serve an S3 model repository on a cluster."""

from __future__ import annotations

import sys
from pathlib import Path

from ..repository.s3 import DEFAULT_REGION, S3Location
from .parser import DefaultsHelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "deploy", help="write Kubernetes or KServe manifests for a repository in S3",
        description="Write validated manifests that run many Triton replicas on a model"
                    " repository in S3 (gen-repo push puts it there). `k8s`: a Deployment, a"
                    " Service and a HorizontalPodAutoscaler; `kserve`: an InferenceService and its"
                    " ServiceAccount. Every manifest is checked against the schemas of a named"
                    " Kubernetes version (and KServe's CRD) before it is written; no cluster is"
                    " needed.")
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    k8s = targets.add_parser("k8s", help="Deployment + Service + HorizontalPodAutoscaler",
                             formatter_class=DefaultsHelpFormatter)
    kserve = targets.add_parser("kserve", help="KServe InferenceService (modelFormat triton)",
                                formatter_class=DefaultsHelpFormatter)
    for t in (k8s, kserve):
        _common_args(t)
    k8s.add_argument("--poll-secs", type=int, default=0, metavar="S",
                     help="poll the bucket every S seconds for new models (0: load every model"
                          " at start; roll out pushes with kubectl rollout restart)")
    k8s.add_argument("--service-type", default="ClusterIP",
                     help="ClusterIP, NodePort or LoadBalancer")
    k8s.add_argument("--startup-seconds", type=int, default=600, metavar="S",
                     help="time a replica gets to download and load its models")
    p.set_defaults(run=run)


def _common_args(p) -> None:
    from ..ship.deploy import DEFAULT_IMAGE, K8S_VERSION

    p.add_argument("--repo", required=True, metavar="S3_URL",
                   help="the repository: s3://HOST:PORT/BUCKET/PATH (an S3-compatible store, as"
                        " the pods reach it) or s3://BUCKET/PATH (AWS S3, or with --endpoint-url)")
    p.add_argument("--endpoint-url", default=None, metavar="URL",
                   help="S3-compatible store as the pods reach it, e.g. http://minio.minio:9000")
    p.add_argument("--out", default="deploy", metavar="DIR", help="directory for the manifests")
    p.add_argument("--name", default="triton", help="name of the resources")
    p.add_argument("--namespace", default=None, help="namespace (default: kubectl's)")
    p.add_argument("--image", default=DEFAULT_IMAGE,
                   help="tritonserver image with torch for the Python backend (the one docker/"
                        " builds, pushed to a registry the cluster can pull from)")
    p.add_argument("--replicas", type=int, default=1, metavar="N",
                   help="replicas to start with (the autoscaler's minimum)")
    p.add_argument("--max-replicas", type=int, default=None, metavar="N",
                   help="the autoscaler's maximum (default: twice --replicas)")
    p.add_argument("--cpu-target", type=int, default=70, metavar="PCT",
                   help="average CPU use, in percent of --cpu, the autoscaler aims at")
    p.add_argument("--gpus-per-replica", dest="gpus", type=int, default=0, metavar="N",
                   help="nvidia.com/gpu per replica (needs the NVIDIA device plugin)")
    p.add_argument("--cpu", default="2", help="CPU request per replica")
    p.add_argument("--memory", default="8Gi", help="memory request and limit per replica")
    p.add_argument("--shm-size", default="1Gi",
                   help="/dev/shm per replica (the Python backend's tensors pass through it)")
    p.add_argument("--secret-name", default=None, metavar="NAME",
                   help="an existing Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                        " (default: NAME-s3, with a template written to DIR/secret/)")
    p.add_argument("--region", default=DEFAULT_REGION, help="AWS_DEFAULT_REGION for the servers")
    p.add_argument("--k8s-version", default=K8S_VERSION, metavar="X.Y",
                   help="Kubernetes version whose schemas the manifests must pass")


def run(args) -> int:
    from ..ship import deploy as dep

    location = S3Location.parse(args.repo, args.endpoint_url)
    extra = {k: getattr(args, k) for k in ("poll_secs", "service_type", "startup_seconds")
             if hasattr(args, k)}
    options = dep.DeployOptions(
        location=location, name=args.name, namespace=args.namespace, image=args.image,
        replicas=args.replicas, max_replicas=args.max_replicas, cpu_target=args.cpu_target,
        gpus=args.gpus, cpu=args.cpu, memory=args.memory, shm_size=args.shm_size,
        secret_name=args.secret_name, region=args.region, k8s_version=args.k8s_version, **extra)
    out = Path(args.out)
    manifests = dep.deploy(args.target, options, out,
                           command=" ".join(["gen-repo", *sys.argv[1:]]))
    for m in manifests:
        print(f"wrote {out / m.path}  ({m.title})")
    print(f"validated against the Kubernetes {options.k8s_version} schemas (strict)"
          + (" and KServe's InferenceService CRD" if args.target == "kserve" else ""))
    print("next:")
    if args.secret_name is None:
        print(f"  1. fill in {out / 'secret' / (options.secret + '.yaml')} and kubectl apply -f"
              " it (or create the Secret as its comments show)")
    else:
        print(f"  1. make sure Secret {options.secret} holds AWS_ACCESS_KEY_ID and"
              " AWS_SECRET_ACCESS_KEY")
        if args.target == "kserve":
            notes = dep.kserve_secret_annotations(options)
            print(f"     and KServe's annotations: {dep.secret_commands(options, notes)[-1]}")
    print(f"  2. kubectl apply -f {out}/")
    if args.target == "k8s":
        print(f"  3. kubectl rollout status deployment/{options.name}")
    else:
        print(f"  3. kubectl get inferenceservice {options.name}")
    return 0
