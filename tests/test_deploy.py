"""deploy/: the KubeRay RayCluster and RayJob and the plain Kubernetes Job, checked without a cluster.

No Kubernetes runs here, so these tests check what can be checked: every manifest parses, has the fields its
kind requires, reads the storage URL from the Secret of ``secret.example.yaml``, asks for GPUs, and starts a
command that the ``hft-search`` parser accepts, on a spec file that exists in ``studies/``.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from hft_search.cli import build_parser
from hft_search.storage import STORAGE_ENV_VAR

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def manifest(name: str) -> dict[str, Any]:
    (document,) = list(yaml.safe_load_all((DEPLOY / name).read_text(encoding="utf-8")))
    return document


SECRET = manifest("secret.example.yaml")


def parse_command(argv: list[str]) -> Any:
    """The namespace the CLI would run, with the spec mounted at /specs mapped to studies/."""
    if argv[0] == "hft-search":
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    assert (ROOT / "studies" / Path(args.spec).name).is_file(), f"{args.spec} is not a spec in studies/"
    assert Path(args.spec).parent == Path("/specs")
    return args


def containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    return pod_template["spec"]["containers"]


def assert_storage_from_the_secret(container: dict[str, Any]) -> None:
    (env,) = [e for e in container["env"] if e["name"] == STORAGE_ENV_VAR]
    assert env["valueFrom"]["secretKeyRef"] == {"name": SECRET["metadata"]["name"], "key": "url"}
    assert "value" not in env


def assert_spec_mounted(pod_template: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in pod_template["spec"]["volumes"]}
    for container in containers(pod_template):
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts["/specs"]]["configMap"]["name"] == "hft-search-spec"


def test_secret_holds_a_postgresql_url_placeholder():
    assert (SECRET["apiVersion"], SECRET["kind"]) == ("v1", "Secret")
    assert SECRET["stringData"]["url"].startswith("postgresql+psycopg://")
    assert "CHANGE_ME" in SECRET["stringData"]["url"]


def test_raycluster_has_a_head_and_a_gpu_worker_group_reading_the_secret():
    cluster = manifest("raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    head = cluster["spec"]["headGroupSpec"]["template"]
    (group,) = cluster["spec"]["workerGroupSpecs"]
    assert group["groupName"] and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for template in (head, group["template"]):
        (container,) = containers(template)
        assert container["image"] and "$KUBERAY_GEN_RAY_START_CMD" in " ".join(container["args"])
        assert_storage_from_the_secret(container)
        assert_spec_mounted(template)
    (worker,) = containers(group["template"])
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_rayjob_runs_launch_on_that_cluster():
    job = manifest("rayjob.yaml")
    cluster = manifest("raycluster.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    args = parse_command(shlex.split(job["spec"]["entrypoint"]))
    assert args.command == "launch" and args.address == "auto" and args.storage is None
    gpus = int(containers(cluster["spec"]["workerGroupSpecs"][0]["template"])[0]["resources"]["limits"]
               ["nvidia.com/gpu"])
    max_workers = cluster["spec"]["workerGroupSpecs"][0]["maxReplicas"]
    assert 0 < args.gpus_per_worker <= 1 and args.workers * args.gpus_per_worker <= gpus * max_workers


def test_plain_job_runs_workers_that_fail_the_job_on_a_verdict():
    job = manifest("worker-job.yaml")
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    template = job["spec"]["template"]
    (container,) = containers(template)
    args = parse_command(container["args"])
    assert args.command == "worker" and args.storage is None and args.threads >= 1
    assert args.threads <= int(container["resources"]["limits"]["cpu"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert_storage_from_the_secret(container)
    assert_spec_mounted(template)
    assert template["spec"]["restartPolicy"] == "Never"  # podFailurePolicy requires it
    (fail,) = [r for r in job["spec"]["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail["onExitCodes"] == {"containerName": container["name"], "operator": "In", "values": [1, 2]}


@pytest.mark.parametrize("name", sorted(p.name for p in DEPLOY.glob("*.yaml")))
def test_every_manifest_is_named_and_tested(name: str):
    assert manifest(name)["metadata"]["name"]
    assert name in {"secret.example.yaml", "raycluster.yaml", "rayjob.yaml", "worker-job.yaml"}
