"""The deployment files (deploy/): the validators ``make lint`` runs do catch a broken file, and
what no schema checks holds: one spool volume per replica, every replica behind HAProxy, grace
periods longer than the drain, the config mounted as a directory, the same config everywhere."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from dispatchd import validation

from .support.haproxy import require_haproxy

REPO = Path(__file__).parent.parent
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
BIN = Path(sys.executable).parent
K8S_VERSION = "1.30.0"  # the Makefile's K8S_VERSION
HTTP_DRAIN = 5.0  # service.py: aiohttp's shutdown_timeout for requests in flight
SPOOL_DIR = "/var/lib/dispatchd"  # the image's VOLUME and the deploy config's spool directory


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def compose() -> dict[str, Any]:
    (doc,) = load_yaml(DEPLOY / "compose.yaml")
    return doc


def kubernetes(kind: str) -> list[dict[str, Any]]:
    return [doc for path in sorted(KUBERNETES.glob("*.yaml")) for doc in load_yaml(path)
            if doc.get("kind") == kind]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "m" else 1)


def worst_drain() -> float:
    """SIGTERM to exit at worst: requests in flight, the batch in hand, closing a dispatcher."""
    cfg = tomllib.loads((DEPLOY / "config" / "dispatchd.toml").read_text())
    shutdown = cfg["server"].get("shutdown_timeout", 8.0)
    call_timeout = cfg.get("dispatch", {}).get("timeout", 30.0)
    return HTTP_DRAIN + shutdown + call_timeout


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", path)


def check_kubernetes(*paths: Path) -> subprocess.CompletedProcess[str]:
    return run(BIN / "kubernetes-validate", "--strict", "-k", K8S_VERSION, *paths)


def assert_fails_broken_copies(check: Callable[..., subprocess.CompletedProcess[str]],
                               original: Path, edits: list[tuple[str, str]], tmp_path: Path) -> None:
    """``check`` refuses each copy of ``original`` with one ``(old, new)`` edit made."""
    text = original.read_text()
    for old, new in edits:
        assert old in text, old  # an edit that changes nothing would prove nothing
        broken = tmp_path / original.name
        broken.write_text(text.replace(old, new))
        result = check(broken)
        assert result.returncode == 1, result.stdout


def test_the_compose_validator_passes_the_file_and_fails_a_broken_copy(tmp_path):
    good = check_compose(DEPLOY / "compose.yaml")
    assert good.returncode == 0, good.stdout + good.stderr
    assert_fails_broken_copies(check_compose, DEPLOY / "compose.yaml", [
        ("stop_grace_period:", "stop_grace_perod:"),
        ("restart: unless-stopped", "restart: [sometimes]"),
    ], tmp_path)


def test_the_kubernetes_validator_passes_the_resources_and_fails_a_broken_copy(tmp_path):
    resources = [p for p in sorted(KUBERNETES.glob("*.yaml")) if p.name != "kustomization.yaml"]
    good = check_kubernetes(*resources)
    assert good.returncode == 0, good.stdout + good.stderr
    assert_fails_broken_copies(check_kubernetes, KUBERNETES / "statefulset.yaml", [
        ("terminationGracePeriodSeconds:", "terminationGracePeriod:"),
        ("containerPort: 8080", "containerPort: http"),
    ], tmp_path)


def test_each_compose_replica_has_its_own_spool_volume_and_sits_behind_haproxy():
    doc = compose()
    replicas = {name: svc for name, svc in doc["services"].items() if name.startswith("dispatchd-")}
    assert len(replicas) >= 2
    spools = {}
    for name, svc in replicas.items():
        assert svc["hostname"] == name  # server.instance is the host name
        mounts = dict(reversed(v.split(":")[:2]) for v in svc["volumes"])
        assert mounts["/etc/dispatchd"] == "./config"  # a directory: edits are seen and reloaded
        spools[name] = mounts[SPOOL_DIR]
        assert seconds(svc["stop_grace_period"]) > worst_drain()
        assert "/readyz" in " ".join(svc["healthcheck"]["test"])
    assert len(set(spools.values())) == len(spools), spools  # one spool per replica
    assert set(spools.values()) <= set(doc["volumes"])
    haproxy = (DEPLOY / "haproxy.cfg").read_text()
    servers = re.findall(r"^\s*server\s+(\S+)\s+(\S+):8080\b", haproxy, re.MULTILINE)
    assert servers == [(name, name) for name in replicas]
    assert "http-check send meth GET uri /readyz" in haproxy


def test_the_statefulset_keeps_a_spool_per_pod_and_outlasts_the_drain():
    (sts,) = kubernetes("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "spool"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[SPOOL_DIR]["name"] == "spool"
    assert "subPath" not in mounts["/etc/dispatchd"]  # a subPath mount never sees an update
    (config_volume,) = [v for v in pod["volumes"] if v["name"] == mounts["/etc/dispatchd"]["name"]]
    assert config_volume["configMap"]["name"] == "dispatchd-config"
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + worst_drain()
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"--uid {pod['securityContext']['runAsUser']} " in dockerfile
    # the Service the engines use selects the pods, and a pod can be taken out of it alone
    services = {s["metadata"]["name"]: s for s in kubernetes("Service")}
    selector = services["dispatchd"]["spec"]["selector"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    assert not set(selector) <= set(sts["spec"]["selector"]["matchLabels"])
    assert services[sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"


def test_the_kustomization_names_every_resource_and_the_config_keeps_its_name():
    (kustomization,) = load_yaml(KUBERNETES / "kustomization.yaml")
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    (generator,) = kustomization["configMapGenerator"]
    assert generator["name"] == "dispatchd-config"
    assert all((KUBERNETES / f).is_file() for f in generator["files"])
    # a hashed name would turn every config change into a rolling restart, not a live reload
    assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True


def test_the_deployment_config_is_one_valid_file(monkeypatch):
    compose_config = DEPLOY / "config" / "dispatchd.toml"
    assert (KUBERNETES / "dispatchd.toml").read_bytes() == compose_config.read_bytes()
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_HOST", "POSTGRES_DB",
                 "RABBITMQ_USER", "RABBITMQ_PASSWORD", "RABBITMQ_HOST", "DISPATCHD_TOKEN"):
        monkeypatch.setenv(name, name.lower())
    cfg = validation.load(compose_config)
    assert cfg.spool.path.startswith(SPOOL_DIR + "/")
    assert cfg.dispatch.enabled == ("database", "message")
    checked = subprocess.run([str(BIN / "dispatchd"), "check-config", "-c", str(compose_config)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    raw = tomllib.loads(compose_config.read_text())
    assert raw["dispatchers"]["database"]["url"].startswith("postgresql://")
    assert "server" not in raw or "instance" not in raw["server"]  # each its host name
    # what the compose file and the StatefulSet hand the containers covers every reference
    referenced = set(re.findall(r"\$\{([A-Z_]+)\}", repr(raw)))  # ${NAME:-default} needs none
    for svc in (s for n, s in compose()["services"].items() if n.startswith("dispatchd-")):
        assert referenced <= set(svc["environment"])
    (sts,) = kubernetes("StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    secret = {"POSTGRES_USER", "POSTGRES_PASSWORD", "RABBITMQ_USER", "RABBITMQ_PASSWORD",
              "DISPATCHD_TOKEN"}  # from the dispatchd-credentials Secret (docs/deployment.md)
    assert referenced <= {e["name"] for e in container["env"]} | secret


def test_haproxy_accepts_its_config():
    result = run(require_haproxy(), "-c", "-f", DEPLOY / "haproxy.cfg")
    assert result.returncode == 0, result.stdout + result.stderr
