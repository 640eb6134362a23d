#!/usr/bin/env python3
"""Static checks of the deployment files (Deploy/) and the configs (Configs/).

Run through Tests/deploy/validate.sh, which provides the pinned tools in .build-deploy-venv/.
Prints one line per check ("ok" or "FAIL" with the reason) and, last, "N passed, M failed"
(", K skipped" when a tool this machine lacks skipped some). Exit status 1 on any failure.

What is checked:
  - every YAML file in Deploy/ and Configs/ parses, every JSON file in Deploy/ parses;
  - the Kubernetes manifests validate (strict: unknown fields fail) against the Kubernetes JSON
    schemas bundled with kubernetes-validate, for the oldest and newest version supported here;
    a broken fixture must fail the same check;
  - Kubernetes conventions: namespace, non-root pods, read-only root file system, dropped
    capabilities, requests and limits, Services and PodDisruptionBudgets select pods and name
    their ports, no load-balancing Service spreads ZeroMQ ports over several pods, mounted
    configs, ConfigMaps and Secrets exist, kustomization.yaml lists the manifests;
  - the shards: one StatefulSet, replicas = entries of the shard map, each entry the pod of
    that ordinal through the headless Service, SHARDS_INDEX = pod index, a volume per pod, a
    PodDisruptionBudget of one; client, device and gateway ids are pod names and every key
    file a process reads is in its Secret; endpoints name Services or pods here;
  - the ConfigMap carries exactly Deploy/config/*.yaml (but for the shard map's hosts); every
    config key in Deploy/ is a key documented in Configs/*.yaml (shard and gateway keys from the
    spec, with a note, while Configs/ lacks them), and every environment variable given to an
    apiary process overrides such a key (a typo would be ignored silently by the binary);
  - compose.yaml validates against the compose-spec schema; its key groups, key volumes,
    client, device and gateway ids, partitions, shard indexes and endpoints agree;
  - the Dockerfile passes hadolint, runs as non-root, and every file it copies from the context
    exists and is not excluded by Deploy/Dockerfile.dockerignore;
  - shell scripts pass shellcheck;
  - systemd units pass `systemd-analyze verify` without a single warning (a broken fixture must
    not) and `systemd-analyze security` rates them at most 2.0;
  - no file in Deploy/ holds a real CURVE secret key.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "Deploy"
CONFIGS = ROOT / "Configs"
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # the venv's bin: check-jsonschema, hadolint, shellcheck

# The oldest Kubernetes the manifests are meant for (the pod-index label they read needs 1.28;
# 1.30 is the oldest release still commonly supported) and the newest schema bundled.
K8S_VERSIONS = ["1.30.0", "1.37.0"]
NAMESPACE = "apiary"
CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
Z85_KEY = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
PARTITIONS = range(0, 20)  # the bundled digits workload


class Failure(Exception):
    pass


class Skip(Exception):
    pass


passed = failed = skipped = 0


def check(name: str, fn, *args) -> None:
    global passed, failed, skipped
    try:
        fn(*args)
    except Skip as s:
        skipped += 1
        print(f"skip {name}: {s}")
    except Failure as f:
        failed += 1
        print(f"FAIL {name}")
        for line in str(f).splitlines():
            print(f"     {line}")
    except Exception:  # a bug in a check is a failure too, with its traceback
        failed += 1
        print(f"FAIL {name} (error in the check)")
        for line in traceback.format_exc().splitlines():
            print(f"     {line}")
    else:
        passed += 1
        print(f"ok   {name}")


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def load_all(p: Path) -> list:
    return [d for d in yaml.safe_load_all(p.read_text()) if d is not None]


def files(base: Path, *suffixes: str) -> list[Path]:
    return sorted(p for p in base.rglob("*") if p.is_file() and p.name.endswith(suffixes))


# ----------------------------------------------------------------------------------------------
# Parsing


def parse_yaml(p: Path) -> None:
    try:
        load_all(p)
    except yaml.YAMLError as e:
        raise Failure(str(e))


def parse_json(p: Path) -> None:
    try:
        json.loads(p.read_text())
    except ValueError as e:
        raise Failure(str(e))


# ----------------------------------------------------------------------------------------------
# Config keys and environment variables


def documented_keys(p: Path) -> set[str]:
    """Dotted keys of a documented config: its keys, and keys shown commented out
    (`  # receipt_timeout_s: 10`) under their parent."""
    keys: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in p.read_text().splitlines():
        m = re.match(r"^(\s*)([a-z0-9_]+):(\s|$)", line)
        c = re.match(r"^(\s*)#\s?([a-z0-9_]+): [^\s#]+\s*$", line)
        if not (m or c):
            continue
        indent, key = len((m or c).group(1)), (m or c).group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        keys.add(path)
        if m:
            stack.append((indent, key))
    return keys


def flatten(d: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.add(key)
        if isinstance(v, dict):
            out |= flatten(v, key + ".")
    return out


def env_name(key: str) -> str:
    return key.replace(".", "_").replace("-", "_").upper()


# Keys of the shard and gateway spec (docs/OPERATIONS.md, "Topologies"), used only for the keys
# Configs/ does not document (yet): main() prints a note naming them, so that they are not
# taken on trust silently. Once Configs/ documents them, Configs/ alone decides.
SPEC_KEYS = {
    "aggregator": {
        "shards", "shards.index", "shards.model", "shards.snapshot", "shards.update", "shards.boundaries",
    },
    "gateway": {
        "gateway", "gateway.push_every_merges", "gateway.push_interval_s",
        "upstream", "upstream.client", "upstream.client.id", "upstream.client.max_pending_updates",
        "upstream.endpoints", "upstream.endpoints.model", "upstream.endpoints.snapshot", "upstream.endpoints.update",
        "upstream.security", "upstream.security.insecure", "upstream.security.secret_key_file",
        "upstream.security.server_public_key_file",
    },
}
NOTES: list[str] = []


def doc_keys() -> dict[str, set[str]]:
    agg = documented_keys(CONFIGS / "aggregator.yaml")
    cli = documented_keys(CONFIGS / "client.yaml")
    # A gateway's root keys are an aggregator's; its own (gateway.*, upstream.*) are documented
    # in Configs/gateway.yaml when there is one.
    gw = set(agg)
    if (CONFIGS / "gateway.yaml").is_file():
        gw |= documented_keys(CONFIGS / "gateway.yaml")
    out = {"aggregator": agg, "client": cli, "gateway": gw}
    for role, spec in SPEC_KEYS.items():
        missing = spec - out[role]
        if missing:
            out[role] = out[role] | missing
            NOTES.append(f"Configs/{role}.yaml does not document {', '.join(sorted(k for k in missing if '.' in k))}: "
                         "taken from the shard and gateway spec")
    return out


DOC_KEYS = doc_keys()
ENV_NAMES = {role: {env_name(k) for k in keys} for role, keys in DOC_KEYS.items()}
# The config files of Deploy/config and the role whose keys they hold.
CONFIG_ROLE = {"aggregator": "aggregator", "shard": "aggregator", "gateway": "gateway", "client": "client"}


def config_keys_documented(p: Path, role: str) -> None:
    cfg = yaml.safe_load(p.read_text()) or {}
    unknown = sorted(flatten(cfg) - DOC_KEYS[role])
    if unknown:
        raise Failure(f"keys not documented for the {role} (Configs/; the binary would ignore them): {unknown}")


def env_documented(where: str, role: str, names: list[str]) -> None:
    unknown = sorted(set(names) - ENV_NAMES[role])
    if unknown:
        raise Failure(f"{where}: {unknown} override no documented key of the {role} (Configs/)")
    if not names:
        raise Skip("no environment variables")


def endpoint(url: str) -> tuple[str, int]:
    m = re.fullmatch(r"tcp://([^:/]+):(\d+)", url)
    if not m:
        raise Failure(f"{url!r} is not tcp://HOST:PORT")
    return m.group(1), int(m.group(2))


def shard_map(cfg: dict) -> list[dict[str, str]]:
    """The shard map of an aggregator config: one {model, snapshot, update} per shard; empty
    for one unsharded aggregator."""
    sh = cfg.get("shards") or {}
    lists = [sh.get(k) or [] for k in ("model", "snapshot", "update")]
    if len({len(l) for l in lists}) != 1:
        raise Failure(f"shards.model, .snapshot and .update differ in length: {[len(l) for l in lists]}")
    if len(lists[0]) <= 1:
        return []
    return [dict(zip(("model", "snapshot", "update"), t)) for t in zip(*lists)]


def shard_config_rules() -> None:
    """Deploy/config/shard.yaml: a map of at least two shards, every entry on the ports the
    shard binds, boundaries (if any) S+1 ascending from 0."""
    cfg = yaml.safe_load((DEPLOY / "config" / "shard.yaml").read_text())
    m = shard_map(cfg)
    bad = []
    if len(m) < 2:
        bad.append("the shard map has fewer than two shards")
    binds = {k: endpoint(v)[1] for k, v in cfg["endpoints"].items()}
    for i, e in enumerate(m):
        for k, url in e.items():
            if endpoint(url)[1] != binds[k]:
                bad.append(f"shard {i} {k} {url}: not the port the shard binds ({binds[k]})")
    b = (cfg.get("shards") or {}).get("boundaries")
    if b is not None and (len(b) != len(m) + 1 or b[0] != 0 or any(x >= y for x, y in zip(b, b[1:]))):
        bad.append(f"shards.boundaries {b}: not {len(m) + 1} ascending numbers from 0")
    if bad:
        raise Failure("\n".join(bad))


# ----------------------------------------------------------------------------------------------
# Kubernetes

K8S_DIR = DEPLOY / "k8s"


def k8s_manifests() -> list[Path]:
    return [p for p in files(K8S_DIR, ".yaml", ".yml") if p.name != "kustomization.yaml"]


def k8s_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in k8s_manifests() for d in load_all(p)]


def k8s_schema(p: Path, version: str) -> None:
    errors = []
    for d in load_all(p):
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except Exception as e:  # ValidationError and friends
            name = f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
            errors.append(f"{name}: {getattr(e, 'message', None) or e}")
    if errors:
        raise Failure("\n".join(errors))


def k8s_schema_rejects_fixture() -> None:
    p = HERE / "fixtures" / "bad-statefulset.yaml"
    for version in K8S_VERSIONS:
        try:
            k8s_schema(p, version)
        except Failure:
            continue
        raise Failure(f"{rel(p)} passed the schema check for {version}: the validator checks nothing")


def kustomization() -> None:
    k = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = k.get("resources", [])
    problems = [f"{r} is listed but missing" for r in listed if not (K8S_DIR / r).is_file()]
    for p in k8s_manifests():
        name = str(p.relative_to(K8S_DIR))
        if name.startswith("secret") and name in listed:
            problems.append(f"{name} is listed: applying it would replace real keys with placeholders")
        elif not name.startswith("secret") and name not in listed:
            problems.append(f"{name} is not listed in kustomization.yaml")
    if k.get("namespace") != NAMESPACE:
        problems.append(f"namespace is {k.get('namespace')!r}, not {NAMESPACE!r}")
    if problems:
        raise Failure("\n".join(problems))


def k8s_namespaces() -> None:
    bad = []
    for p, d in k8s_docs():
        md = d.get("metadata", {})
        if d["kind"] == "Namespace":
            if md.get("name") != NAMESPACE:
                bad.append(f"{rel(p)}: Namespace {md.get('name')}")
        elif md.get("namespace") != NAMESPACE:
            bad.append(f"{rel(p)}: {d['kind']}/{md.get('name')} in namespace {md.get('namespace')!r}")
    if bad:
        raise Failure("\n".join(bad))


def workloads() -> list[tuple[Path, dict]]:
    return [(p, d) for p, d in k8s_docs() if d["kind"] in ("StatefulSet", "Deployment", "DaemonSet", "Job")]


def k8s_pod_security(p: Path, d: dict) -> None:
    spec = d["spec"]["template"]["spec"]
    psc = spec.get("securityContext", {})
    bad = []
    if psc.get("runAsNonRoot") is not True:
        bad.append("pod securityContext.runAsNonRoot is not true")
    if not psc.get("runAsUser"):
        bad.append("pod securityContext.runAsUser is unset or 0")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        bad.append("pod seccompProfile is not RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        bad.append("automountServiceAccountToken is not false")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        n = c["name"]
        if sc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{n}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{n}: allowPrivilegeEscalation is not false")
        if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
            bad.append(f"{n}: capabilities.drop is not [ALL]")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    bad.append(f"{n}: no {kind}.{r}")
    if bad:
        raise Failure("\n".join(bad))


ROLES = ("aggregator", "gateway", "client")
ZMQ_PORTS = {5556, 5557, 5558}


def container_role(c: dict) -> str | None:
    args = (c.get("command") or []) + (c.get("args") or [])
    for a in args:
        if a in ROLES:
            return a
    return None


def container_config(c: dict) -> str | None:
    """The ConfigMap key of the config a container runs (--config /etc/apiary/config/KEY)."""
    args = (c.get("command") or []) + (c.get("args") or [])
    for a, b in zip(args, args[1:]):
        if a == "--config":
            return Path(b).name
    return None


def ordinals(d: dict) -> range:
    start = ((d["spec"].get("ordinals") or {}).get("start")) or 0
    return range(start, start + d["spec"].get("replicas", 1))


def pod_labels(d: dict) -> list[dict]:
    """The labels of every pod of a workload: a StatefulSet's controller adds the pod name and
    the pod index to the template's."""
    labels = d["spec"]["template"]["metadata"]["labels"]
    if d["kind"] != "StatefulSet":
        return [labels]
    return [{**labels, "statefulset.kubernetes.io/pod-name": f"{d['metadata']['name']}-{i}",
             "apps.kubernetes.io/pod-index": str(i)} for i in ordinals(d)]


def selects(sel: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in sel.items())


def configmap_data() -> dict[str, str]:
    cm = [d for _, d in k8s_docs() if d["kind"] == "ConfigMap" and d["metadata"].get("name") == "apiary-config"]
    if len(cm) != 1:
        raise Failure("no ConfigMap apiary-config")
    return cm[0].get("data", {})


def k8s_references() -> None:
    docs = k8s_docs()
    configmaps = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Secret"}
    bad = []
    pods = []
    for p, d in workloads():
        spec = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        sel = d["spec"]["selector"]["matchLabels"]
        if not selects(sel, labels):
            bad.append(f"{d['metadata']['name']}: selector does not match the template labels")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in d["spec"].get("volumeClaimTemplates", [])}
        ports = {}
        for c in spec["containers"]:
            ports |= {pt.get("name"): pt.get("containerPort") for pt in c.get("ports", [])}
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes and m["name"] not in claims:
                    bad.append(f"{c['name']}: mounts undefined volume {m['name']}")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                pr = c.get(probe)
                if pr:
                    port = (pr.get("tcpSocket") or pr.get("httpGet") or {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        bad.append(f"{c['name']}: {probe} names port {port}, which the container lacks")
            cfg = container_config(c)
            mounted = [i["key"] for v in volumes.values() if "configMap" in v for i in v["configMap"].get("items", [])]
            if cfg and cfg not in mounted:
                bad.append(f"{c['name']}: runs --config {cfg}, which no mounted ConfigMap item provides")
        for v in volumes.values():
            if "configMap" in v:
                cm = configmaps.get(v["configMap"]["name"])
                if cm is None:
                    bad.append(f"volume {v['name']}: no ConfigMap {v['configMap']['name']}")
                else:
                    for item in v["configMap"].get("items", []):
                        if item["key"] not in cm.get("data", {}):
                            bad.append(f"volume {v['name']}: ConfigMap has no key {item['key']}")
            if "secret" in v and v["secret"]["secretName"] not in secrets:
                bad.append(f"volume {v['name']}: no Secret {v['secret']['secretName']} in secret.example.yaml")
        pods += [(pl, ports) for pl in pod_labels(d)]
        if d["kind"] == "StatefulSet":
            svc = [s for _, s in docs if s["kind"] == "Service" and s["metadata"]["name"] == d["spec"]["serviceName"]]
            if not svc or svc[0]["spec"].get("clusterIP") != "None":
                bad.append(f"{d['metadata']['name']}: serviceName {d['spec']['serviceName']} is not a headless Service here")
    for _, s in docs:
        if s["kind"] != "Service":
            continue
        sel = s["spec"].get("selector", {})
        matching = [ports for labels, ports in pods if selects(sel, labels)]
        if not matching:
            bad.append(f"Service {s['metadata']['name']} selects no pod")
        for pt in s["spec"].get("ports", []):
            tp = pt.get("targetPort")
            if isinstance(tp, str) and not any(tp in ports for ports in matching):
                bad.append(f"Service {s['metadata']['name']}: targetPort {tp} is no named container port")
        # A client's three sockets must reach one process: a load-balancing Service in front of
        # ZeroMQ ports must have exactly one pod behind it.
        zmq = {pt.get("port") for pt in s["spec"].get("ports", [])} & ZMQ_PORTS
        if zmq and s["spec"].get("clusterIP") != "None" and len(matching) > 1:
            bad.append(f"Service {s['metadata']['name']} balances ZeroMQ ports over {len(matching)} pods")
    for _, pdb in docs:
        if pdb["kind"] == "PodDisruptionBudget":
            sel = pdb["spec"]["selector"]["matchLabels"]
            if not any(selects(sel, labels) for labels, _ in pods):
                bad.append(f"PodDisruptionBudget {pdb['metadata']['name']} selects no pod")
    if bad:
        raise Failure("\n".join(bad))


def role_workloads(role: str) -> list[tuple[dict, dict]]:
    return [(d, c) for _, d in workloads() for c in d["spec"]["template"]["spec"]["containers"] if container_role(c) == role]


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def k8s_shards() -> None:
    """The aggregator: one StatefulSet with a state volume per pod; with a shard map, one replica
    per map entry, each entry the pod of that ordinal through the headless Service on the port
    the container names, SHARDS_INDEX the pod index, at most one shard down (PDB); without one,
    one replica."""
    aggs = role_workloads("aggregator")
    if len(aggs) != 1:
        raise Failure(f"{len(aggs)} aggregator workloads, expected 1 (one StatefulSet of shards)")
    d, c = aggs[0]
    bad = []
    if d["kind"] != "StatefulSet":
        raise Failure(f"the aggregator is a {d['kind']}: shards need stable names and volumes (a StatefulSet)")
    if not d["spec"].get("volumeClaimTemplates"):
        bad.append("the aggregator has no volumeClaimTemplates: each shard needs its own state volume")
    cfg = yaml.safe_load(configmap_data().get(container_config(c) or "", "") or "{}")
    m = shard_map(cfg)
    replicas = d["spec"].get("replicas", 1)
    name, svc = d["metadata"]["name"], d["spec"]["serviceName"]
    ports = {pt["name"]: pt["containerPort"] for pt in c.get("ports", [])}
    if not m:
        if replicas != 1:
            bad.append(f"{replicas} replicas without a shard map: independent aggregators, not shards")
    else:
        if replicas != len(m):
            bad.append(f"{replicas} replicas but {len(m)} shards in the map of {container_config(c)}")
        for i, e in zip(ordinals(d), m):
            for k, url in e.items():
                want = f"tcp://{name}-{i}.{svc}.{NAMESPACE}.svc:{ports.get(k)}"
                if url != want:
                    bad.append(f"shard {i} {k}: {url}, expected {want}")
        fp = env_of(c).get("SHARDS_INDEX", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if fp != "metadata.labels['apps.kubernetes.io/pod-index']":
            bad.append("SHARDS_INDEX is not the pod index (downward API, the apps.kubernetes.io/pod-index label)")
        pdbs = [p for _, p in k8s_docs() if p["kind"] == "PodDisruptionBudget"
                and any(selects(p["spec"]["selector"]["matchLabels"], pl) for pl in pod_labels(d))]
        if not pdbs or any(p["spec"].get("maxUnavailable") != 1 and p["spec"].get("minAvailable") != replicas - 1 for p in pdbs):
            bad.append("no PodDisruptionBudget keeps all but one shard up (maxUnavailable: 1)")
    if bad:
        raise Failure("\n".join(bad))


def key_file(path: str, idvar: str) -> bool:
    return path == f"/etc/apiary/keys/$({idvar}).secret"


def k8s_identities_keys() -> None:
    """Every client, device and gateway pod has a fixed id, its pod name, and reads the key
    named after it; its Secret holds that key for every replica and the server key files its
    config names; shards and gateways find their own key files; partitions differ."""
    bad = []
    data = configmap_data()
    secrets = {d["metadata"]["name"]: d.get("stringData", {}) for _, d in k8s_docs() if d["kind"] == "Secret"}
    parts: dict[int, str] = {}
    for _, d in workloads():
        spec = d["spec"]["template"]["spec"]
        name = d["metadata"]["name"]
        for c in spec["containers"]:
            role = container_role(c)
            if role is None:
                continue
            env = env_of(c)
            cfg = yaml.safe_load(data.get(container_config(c) or "", "") or "{}")
            keyvols = [v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v]
            if len(keyvols) != 1:
                bad.append(f"{name}: {len(keyvols)} key Secrets mounted, expected 1")
                continue
            held = secrets.get(keyvols[0], {})

            def needs(var: str, cfgpath: list[str]) -> None:
                v = env.get(var, {}).get("value")
                if v is None:
                    node = cfg
                    for k in cfgpath:
                        node = (node or {}).get(k)
                    v = node
                if not v:
                    bad.append(f"{name}: no {'.'.join(cfgpath)} ({var})")
                elif "$(" not in v and Path(v).name not in held:
                    bad.append(f"{name}: {var} {v} is not in the Secret {keyvols[0]}")

            idvar = {"client": "CLIENT_ID", "gateway": "UPSTREAM_CLIENT_ID"}.get(role)
            if idvar:
                keyvar = "SECURITY_SECRET_KEY_FILE" if role == "client" else "UPSTREAM_SECURITY_SECRET_KEY_FILE"
                if env.get(idvar, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
                    bad.append(f"{name}: {idvar} is not the pod name (downward API metadata.name)")
                if not key_file(env.get(keyvar, {}).get("value", ""), idvar):
                    bad.append(f"{name}: {keyvar} is not /etc/apiary/keys/$({idvar}).secret")
                if d["kind"] != "StatefulSet":
                    bad.append(f"{name}: a {d['kind']}: pod names are not stable, no key can be authorized for them")
                missing = [f"{name}-{i}.secret" for i in ordinals(d) if f"{name}-{i}.secret" not in held]
                if missing:
                    bad.append(f"Secret {keyvols[0]} lacks {missing}")
            if role == "client":
                needs("SECURITY_SERVER_PUBLIC_KEY_FILE", ["security", "server_public_key_file"])
                fp = env.get("DATA_PARTITION", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                if fp == "metadata.labels['apps.kubernetes.io/pod-index']":
                    for i in ordinals(d):
                        if i not in PARTITIONS:
                            bad.append(f"{name}-{i}: partition {i} outside {PARTITIONS.start}-{PARTITIONS.stop - 1}")
                        elif i in parts:
                            bad.append(f"{name}-{i}: partition {i} is also {parts[i]}'s")
                        parts[i] = f"{name}-{i}"
                else:
                    bad.append(f"{name}: DATA_PARTITION is not the pod index")
            else:  # an aggregator (shard) or a gateway: its server key and authorized_keys
                needs("SECURITY_SECRET_KEY_FILE", ["security", "secret_key_file"])
                needs("SECURITY_AUTHORIZED_KEYS", ["security", "authorized_keys"])
            if role == "gateway":
                needs("UPSTREAM_SECURITY_SERVER_PUBLIC_KEY_FILE", ["upstream", "security", "server_public_key_file"])
    if bad:
        raise Failure("\n".join(bad))


def k8s_endpoints_resolve() -> None:
    """Every endpoint a client, device or gateway connects to (its config in the ConfigMap and
    its environment) names a Service here, or a StatefulSet pod through its headless Service,
    on a port that Service has; every shard map entry likewise."""
    docs = k8s_docs()
    services = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Service"}
    sts = {d["metadata"]["name"]: d for _, d in workloads() if d["kind"] == "StatefulSet"}
    data = configmap_data()
    bad = []

    def resolve(where: str, url: str) -> None:
        host, port = endpoint(url)
        if host in ("0.0.0.0", "127.0.0.1", "localhost"):
            bad.append(f"{where}: {url} is not reachable from another pod")
            return
        name = re.sub(rf"\.{NAMESPACE}\.svc(\.cluster\.local)?$", "", host)
        parts = name.split(".")
        if len(parts) == 1 and parts[0] in services:
            svc = services[parts[0]]
        elif len(parts) == 2 and parts[1] in services and services[parts[1]]["spec"].get("clusterIP") == "None":
            svc = services[parts[1]]
            pod = parts[0]
            if not any(s["spec"]["serviceName"] == parts[1] and pod in [f"{n}-{i}" for i in ordinals(s)] for n, s in sts.items()):
                bad.append(f"{where}: {url}: no pod {pod} behind {parts[1]}")
        else:
            bad.append(f"{where}: {url}: no Service {host} here")
            return
        if port not in {pt.get("port") for pt in svc["spec"].get("ports", [])}:
            bad.append(f"{where}: {url}: Service {svc['metadata']['name']} has no port {port}")

    for _, d in workloads():
        for c in d["spec"]["template"]["spec"]["containers"]:
            role = container_role(c)
            cfg = yaml.safe_load(data.get(container_config(c) or "", "") or "{}")
            env = env_of(c)
            where = d["metadata"]["name"]
            if role == "client":
                for k in ("model", "snapshot", "update"):
                    resolve(where, env.get(f"ENDPOINTS_{k.upper()}", {}).get("value") or cfg["endpoints"][k])
            elif role == "gateway":
                for k in ("model", "snapshot", "update"):
                    resolve(where, env.get(f"UPSTREAM_ENDPOINTS_{k.upper()}", {}).get("value") or cfg["upstream"]["endpoints"][k])
            elif role == "aggregator":
                for i, e in enumerate(shard_map(cfg)):
                    for k, url in e.items():
                        resolve(f"{where} shard map [{i}]", url)
    if bad:
        raise Failure("\n".join(bad))


def k8s_configmap_matches() -> None:
    """The ConfigMap carries Deploy/config/*.yaml, the same text but for the shard map's hosts
    (the compose services apiary-shard-N there, the shard pods here)."""
    data = configmap_data()
    bad = []
    local = {p.name: p.read_text() for p in sorted((DEPLOY / "config").glob("*.yaml"))}
    for name, text in local.items():
        got = data.get(name)
        if got is None:
            bad.append(f"no data[{name}]")
            continue
        if name == "shard.yaml":
            got = re.sub(rf"tcp://apiary-aggregator-(\d+)\.apiary-aggregator-headless\.{NAMESPACE}\.svc:", r"tcp://apiary-shard-\1:", got)
        if got != text:
            bad.append(f"data[{name}] differs from Deploy/config/{name}" + (" (beyond the shard map's hosts)" if name == "shard.yaml" else ""))
    extra = sorted(set(data) - set(local))
    if extra:
        bad.append(f"data {extra} has no file in Deploy/config")
    if bad:
        raise Failure("\n".join(bad))


def k8s_env() -> None:
    bad = []
    for _, d in workloads():
        for c in d["spec"]["template"]["spec"]["containers"]:
            role = container_role(c)
            names = [e["name"] for e in c.get("env", [])]
            if role:
                try:
                    env_documented(f"{d['metadata']['name']}/{c['name']}", role, names)
                except Failure as f:
                    bad.append(str(f))
                except Skip:
                    pass
    if bad:
        raise Failure("\n".join(bad))


# ----------------------------------------------------------------------------------------------
# Compose

COMPOSE = DEPLOY / "compose.yaml"


def compose_schema() -> None:
    exe = BIN / "check-jsonschema"
    r = subprocess.run([str(exe), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise Failure((r.stdout + r.stderr).strip())


def key_groups(args: list[str]) -> list[dict]:
    """The groups of a keys-init.sh command line: first the aggregator's (server key
    "aggregator"), then one per --gateway: the gateway id (a client of the aggregator), and its
    devices (clients of the gateway, server key "gateway")."""
    if len(args) < 2:
        raise Failure(f"keys-init arguments {args}: need AGGREGATOR_DIR CLIENT_DIR")
    groups = [{"server": "aggregator", "server_dir": args[0], "peer_dir": args[1], "ids": []}]
    rest = args[2:]
    while rest and rest[0] != "--gateway":
        groups[0]["ids"].append(rest.pop(0))
    while rest:
        if len(rest) < 4:
            raise Failure(f"keys-init: --gateway needs GATEWAY_ID GATEWAY_DIR DEVICE_DIR, got {rest}")
        _, gw, gdir, ddir, *rest = rest
        groups.append({"server": "aggregator", "server_dir": args[0], "peer_dir": gdir, "ids": [gw], "gateway": gw})
        devices = []
        while rest and rest[0] != "--gateway":
            devices.append(rest.pop(0))
        groups.append({"server": "gateway", "server_dir": gdir, "peer_dir": ddir, "ids": devices})
    return groups


def compose_consistency() -> None:
    """Services hardened; every shard, gateway, client and device gets the keys the key service
    makes for it, in the volume it mounts; ids, partitions and shard indexes agree; endpoints
    name services (or aliases) that serve them."""
    c = yaml.safe_load(COMPOSE.read_text())
    services = c["services"]
    bad = []
    keygen = [s for s in services.values() if "apiary-keys-init" in (s.get("entrypoint") or [])]
    if len(keygen) != 1:
        raise Failure("no single key service (entrypoint apiary-keys-init)")
    groups = key_groups([str(a) for a in keygen[0]["command"]])
    # Which named volume holds which key directory of the key service.
    vol_of_dir = {}
    for v in keygen[0].get("volumes", []):
        src, dst = str(v).split(":")[:2]
        vol_of_dir[dst] = src
    for g in groups:
        for k in ("server_dir", "peer_dir"):
            if g[k] not in vol_of_dir:
                bad.append(f"apiary-keys: {g[k]} is no volume of the key service")

    def keys_volume(s: dict) -> str | None:
        for v in s.get("volumes", []):
            parts = str(v).split(":")
            if len(parts) >= 2 and parts[1] == "/etc/apiary/keys":
                return parts[0]
        return None

    def names_of(name: str, s: dict) -> set[str]:
        nets = s.get("networks") or {}
        aliases = {a for n in (nets.values() if isinstance(nets, dict) else []) for a in ((n or {}).get("aliases") or [])}
        return {name} | aliases

    local_cfg = {p.name: yaml.safe_load(p.read_text()) for p in (DEPLOY / "config").glob("*.yaml")}
    ids, parts, shard_idx, state_vols = [], [], {}, []
    servers: dict[str, tuple[str, dict]] = {}  # host name -> (role, config) of aggregators and gateways
    for name, s in services.items():
        cmd = [str(a) for a in (s.get("command") or [])]
        role = cmd[0] if cmd and cmd[0] in ROLES else None
        if role in ("aggregator", "gateway"):
            cfg = local_cfg.get(Path(cmd[cmd.index("--config") + 1]).name, {}) if "--config" in cmd else {}
            for n in names_of(name, s):
                servers[n] = (role, cfg)
    for name, s in services.items():
        if s.get("privileged") or str(s.get("user", "")).split(":")[0] in ("root", "0"):
            bad.append(f"{name}: runs privileged or as root")
        if s.get("read_only") is not True or s.get("cap_drop") != ["ALL"]:
            bad.append(f"{name}: not read_only with cap_drop [ALL]")
        cmd = [str(a) for a in (s.get("command") or [])]
        env = s.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        env = {k: str(v) for k, v in env.items()}
        role = cmd[0] if cmd and cmd[0] in ROLES else None
        if not role:
            continue
        cfg = local_cfg.get(Path(cmd[cmd.index("--config") + 1]).name) if "--config" in cmd else None
        if cfg is None:
            bad.append(f"{name}: runs no config of Deploy/config")
            continue
        try:
            env_documented(f"service {name}", role, list(env))
        except Failure as f:
            bad.append(str(f))
        except Skip:
            pass
        kv = keys_volume(s)
        if role in ("aggregator", "gateway"):
            if "healthcheck" not in s:
                bad.append(f"{name}: no healthcheck")
            else:
                port = str((cfg.get("http") or {}).get("port", ""))
                test = " ".join(str(t) for t in s["healthcheck"].get("test", []))
                if not re.search(rf"/dev/tcp/127\.0\.0\.1/{port}\b", test) and not re.search(r"/dev/tcp/127\.0\.0\.1/5556\b", test):
                    bad.append(f"{name}: the healthcheck connects to no port the process serves")
            state = [str(v).split(":")[0] for v in s.get("volumes", []) if str(v).split(":")[1:2] == ["/var/lib/apiary"]]
            if not state:
                bad.append(f"{name}: no volume at /var/lib/apiary")
            state_vols += state
        if role == "aggregator":
            if kv != vol_of_dir.get(groups[0]["server_dir"]):
                bad.append(f"{name}: its keys volume {kv} is not the aggregator's ({vol_of_dir.get(groups[0]['server_dir'])})")
            m = shard_map(cfg)
            if m:
                try:
                    i = int(env.get("SHARDS_INDEX", ""))
                except ValueError:
                    bad.append(f"{name}: runs a shard config without a SHARDS_INDEX")
                    continue
                if i in shard_idx:
                    bad.append(f"{name}: SHARDS_INDEX {i} is also {shard_idx[i]}'s")
                shard_idx[i] = name
                for k, url in m[i].items() if 0 <= i < len(m) else []:
                    host, _ = endpoint(url)
                    if host not in names_of(name, s):
                        bad.append(f"{name}: shard map entry {i} ({url}) names {host}, not this service")
        if role == "gateway":
            gid = env.get("UPSTREAM_CLIENT_ID") or (cfg.get("upstream") or {}).get("client", {}).get("id")
            g = [g for g in groups if g.get("gateway") == gid]
            if not g:
                bad.append(f"{name}: gateway id {gid} gets no key from the key service (--gateway {gid} ...)")
            else:
                if kv != vol_of_dir.get(g[0]["peer_dir"]):
                    bad.append(f"{name}: its keys volume {kv} is not the one keys-init fills for {gid}")
                if env.get("UPSTREAM_SECURITY_SECRET_KEY_FILE") != f"/etc/apiary/keys/{gid}.secret":
                    bad.append(f"{name}: UPSTREAM_SECURITY_SECRET_KEY_FILE is not /etc/apiary/keys/{gid}.secret")
            for k in ("model", "snapshot", "update"):
                url = env.get(f"UPSTREAM_ENDPOINTS_{k.upper()}") or cfg["upstream"]["endpoints"][k]
                host, _ = endpoint(url)
                if servers.get(host, ("",))[0] != "aggregator":
                    bad.append(f"{name}: upstream {k} {url}: {host} is no aggregator or shard service")
        if role == "client":
            cid = env.get("CLIENT_ID", "")
            ids.append(cid)
            if not CLIENT_ID.match(cid):
                bad.append(f"{name}: CLIENT_ID {cid!r} is not a valid client id")
            g = [g for g in groups if vol_of_dir.get(g["peer_dir"]) == kv and cid in g["ids"]]
            if not g:
                bad.append(f"{name}: {cid} gets no key from the key service in its keys volume {kv}")
            else:
                want_server = "aggregator" if g[0]["server"] == "aggregator" else "gateway"
                pub = env.get("SECURITY_SERVER_PUBLIC_KEY_FILE") or cfg["security"]["server_public_key_file"]
                if pub != f"/etc/apiary/keys/{g[0]['server']}.public":
                    bad.append(f"{name}: server key {pub}, but {cid} is authorized at the {g[0]['server']}")
                hosts = set()
                for k in ("model", "snapshot", "update"):
                    url = env.get(f"ENDPOINTS_{k.upper()}") or cfg["endpoints"][k]
                    host, _ = endpoint(url)
                    hosts.add(host)
                    if servers.get(host, ("",))[0] != want_server:
                        bad.append(f"{name}: {k} {url}: {host} is no {want_server} service")
                if len(hosts) != 1:
                    bad.append(f"{name}: endpoints on several hosts {sorted(hosts)}")
            if env.get("SECURITY_SECRET_KEY_FILE") != f"/etc/apiary/keys/{cid}.secret":
                bad.append(f"{name}: SECURITY_SECRET_KEY_FILE is not /etc/apiary/keys/{cid}.secret")
            try:
                part = int(env.get("DATA_PARTITION"))
                parts.append(part)
                if part not in PARTITIONS:
                    bad.append(f"{name}: partition {part} outside 0-19")
            except (TypeError, ValueError):
                bad.append(f"{name}: DATA_PARTITION missing or not a number")
    if len(set(ids)) != len(ids) or len(set(parts)) != len(parts):
        bad.append(f"client ids {ids} or partitions {parts} repeat")
    if len(set(state_vols)) != len(state_vols):
        bad.append(f"state volumes shared between processes: {state_vols}")
    if shard_idx and sorted(shard_idx) != list(range(len(shard_map(local_cfg["shard.yaml"])))):
        bad.append(f"shard indexes {sorted(shard_idx)}: not one service per entry of the shard map")
    if not ids:
        bad.append("no client services")
    if bad:
        raise Failure("\n".join(bad))


# ----------------------------------------------------------------------------------------------
# Dockerfile


DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"


def hadolint() -> None:
    r = subprocess.run([str(BIN / "hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    if r.returncode != 0:
        raise Failure((r.stdout + r.stderr).strip())


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        word, _, rest = s.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def ignore_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus **) as a regular expression."""
    pattern = pattern.strip().lstrip("/").rstrip("/")
    rx, i = "", 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            rx += ".*"
            i += 2
            if i < len(pattern) and pattern[i] == "/":
                rx = rx[:-2] + "(.*/)?"
                i += 1
            continue
        rx += {"*": "[^/]*", "?": "[^/]"}.get(ch, re.escape(ch) if ch != "[" else "[")
        if ch == "[":
            j = pattern.index("]", i)
            rx += pattern[i + 1:j + 1]
            i = j
        i += 1
    return re.compile(rx + "$")


def ignored(path: str, patterns: list[str]) -> bool:
    """moby's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for pat in patterns:
        neg = pat.startswith("!")
        rx = ignore_regex(pat[1:] if neg else pat)
        if any(rx.match(c) for c in candidates):
            result = not neg
    return result


def tracked_files(directory: str) -> list[str]:
    """The files of the repository under `directory` (what a build from a clean checkout
    copies; caches such as __pycache__ that tests leave behind are not), or every file there
    when git is not available."""
    r = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--", directory], capture_output=True, text=True)
    if r.returncode == 0 and r.stdout:
        return [f for f in r.stdout.split("\0") if f]
    return [rel(p) for p in (ROOT / directory).rglob("*") if p.is_file()]


def dockerfile_rules() -> None:
    ins = dockerfile_instructions()
    args = {}
    for w, rest in ins:
        if w == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v
    froms = [rest for w, rest in ins if w == "FROM"]
    bad = []
    if len(froms) < 2:
        bad.append("not multi-stage")
    final = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), froms[-1].split()[0])
    if not final.startswith("debian:bookworm-slim"):
        bad.append(f"runtime stage is {final}, not debian:bookworm-slim")
    build = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), froms[0].split()[0])
    if not build.startswith("swift:6."):
        bad.append(f"build stage is {build}, not an official swift:6.x image")
    users = [rest for w, rest in ins if w == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        bad.append("the image does not end as a non-root USER")
    ep = [rest for w, rest in ins if w == "ENTRYPOINT"]
    if not ep or json.loads(ep[-1]) != ["apiary"]:
        bad.append('ENTRYPOINT is not ["apiary"]')
    exposed = {p for w, rest in ins if w == "EXPOSE" for p in rest.split()}
    for port in ("5556", "5557", "5558"):
        if port not in exposed:
            bad.append(f"port {port} not exposed")
    runs = " ".join(rest for w, rest in ins if w == "RUN")
    for needle in ("--static-swift-stdlib", "--product apiary", "libzmq3-dev", "libzmq5", ".resources"):
        if needle not in runs:
            bad.append(f"no {needle} in the RUN steps")
    patterns = [l.strip() for l in DOCKERIGNORE.read_text().splitlines() if l.strip() and not l.startswith("#")]
    for w, rest in ins:
        if w not in ("COPY", "ADD") or "--from=" in rest:
            continue
        srcs = [s for s in rest.split() if not s.startswith("--")][:-1]
        for s in srcs:
            if re.search(r"[*?\[]", s):
                continue  # optional glob (Package.resolve[d])
            if not (ROOT / s).exists():
                bad.append(f"COPY {s}: not in the repository")
                continue
            targets = [s] if (ROOT / s).is_file() else tracked_files(s)
            for t in targets:
                if ignored(t, patterns) and not t.endswith((".secret",)):
                    bad.append(f"COPY {s}: {t} is excluded by {rel(DOCKERIGNORE)}")
                    break
    for must_not in (".build/debug/apiary", "keys/aggregator.secret"):
        if not ignored(must_not, patterns):
            bad.append(f"{must_not} would be sent to the build context")
    if bad:
        raise Failure("\n".join(bad))


# ----------------------------------------------------------------------------------------------
# Shell, systemd, secrets


def shellcheck(p: Path) -> None:
    r = subprocess.run([str(BIN / "shellcheck"), "--format=gcc", str(p)], capture_output=True, text=True)
    if r.returncode != 0:
        raise Failure((r.stdout + r.stderr).strip())


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
SYSTEMD_UNITS = DEPLOY / "systemd"


def systemd_root(units: list[Path]) -> Path:
    """A throwaway root for `systemd-analyze --root`: the distribution's units (for
    sysinit.target and friends), stubs /opt/apiary/bin/apiary and apiary-edge, and the units under test."""
    root = Path(tempfile.mkdtemp(prefix="apiary-systemd-"))
    for src in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if src.is_dir():
            shutil.copytree(src, root / "usr/lib/systemd/system", symlinks=True)
            break
    (root / "opt/apiary/bin").mkdir(parents=True)
    for name in ("apiary", "apiary-edge"):
        stub = root / "opt/apiary/bin" / name
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    for u in units:
        shutil.copy(u, root / "etc/systemd/system" / u.name)
    return root


def unit_names() -> list[str]:
    # A template is verified through an instance.
    return [u.name.replace("@.", "@edge-7.") for u in sorted(SYSTEMD_UNITS.glob("*.service"))]


def systemd_verify(names: list[str], units: list[Path]) -> str:
    root = systemd_root(units)
    try:
        r = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", f"--root={root}", *names],
                           capture_output=True, text=True)
        return (r.stdout + r.stderr).strip() + ("" if r.returncode == 0 else f"\n(exit {r.returncode})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def systemd_units_verify() -> None:
    if not SYSTEMD_ANALYZE:
        raise Skip("systemd-analyze is not installed")
    out = systemd_verify(unit_names(), sorted(SYSTEMD_UNITS.glob("*.service")))
    if out:
        raise Failure(out.replace(str(Path(tempfile.gettempdir())), "$TMP"))


def systemd_rejects_fixture() -> None:
    if not SYSTEMD_ANALYZE:
        raise Skip("systemd-analyze is not installed")
    if not systemd_verify(["bad.service"], [HERE / "fixtures" / "bad.service"]):
        raise Failure("systemd-analyze verify said nothing about fixtures/bad.service")


def systemd_security() -> None:
    if not SYSTEMD_ANALYZE:
        raise Skip("systemd-analyze is not installed")
    root = systemd_root(sorted(SYSTEMD_UNITS.glob("*.service")))
    bad = []
    try:
        for name in unit_names():
            r = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", f"--root={root}", "--no-pager", name],
                               capture_output=True, text=True)
            m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
            if not m:
                bad.append(f"{name}: no exposure level in the output: {r.stderr.strip()[:300]}")
            elif float(m.group(1)) > 2.0:
                bad.append(f"{name}: exposure {m.group(1)} > 2.0")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if bad:
        raise Failure("\n".join(bad))


def systemd_env() -> None:
    bad = []
    for u in sorted(SYSTEMD_UNITS.glob("*.service")):
        role = "client" if "client" in u.name or "edge" in u.name else "gateway" if "gateway" in u.name else "aggregator"
        names = []
        for line in u.read_text().splitlines():
            m = re.match(r"^#?\s*Environment=([A-Z][A-Z0-9_]*)=", line) or re.match(r"^#\s+([A-Z][A-Z0-9_]*)=\S", line)
            if m:
                names.append(m.group(1))
        try:
            env_documented(u.name, role, names)
        except Failure as f:
            bad.append(str(f))
    if bad:
        raise Failure("\n".join(bad))


def no_secret_keys() -> None:
    bad = []
    for p in files(DEPLOY, ""):
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            continue
        for m in re.finditer(r'secret-key\s*=\s*"([^"]*)"', text):
            if Z85_KEY.match(m.group(1)):
                bad.append(f"{rel(p)}: a real-looking CURVE secret key")
    if bad:
        raise Failure("\n".join(bad))


# ----------------------------------------------------------------------------------------------


def main() -> int:
    yaml_files = files(DEPLOY, ".yaml", ".yml") + files(CONFIGS, ".yaml", ".yml")
    for p in yaml_files:
        check(f"yaml parses: {rel(p)}", parse_yaml, p)
    json_files = files(DEPLOY, ".json")
    for p in json_files:
        check(f"json parses: {rel(p)}", parse_json, p)
    if not json_files:
        print("     (no JSON files in Deploy/)")

    for note in NOTES:
        print(f"note {note}")
    for p in files(DEPLOY / "config", ".yaml"):
        role = CONFIG_ROLE.get(p.stem)
        if role is None:
            check(f"config role known: {rel(p)}", lambda: (_ for _ in ()).throw(Failure(f"no role for {p.name}: add it to CONFIG_ROLE")))
            continue
        check(f"config keys documented for the {role}: {rel(p)}", config_keys_documented, p, role)
    check("Deploy/config/shard.yaml: a shard map on the ports the shards bind", shard_config_rules)

    for p in k8s_manifests():
        for v in K8S_VERSIONS:
            check(f"kubernetes {v} schema (strict): {rel(p)}", k8s_schema, p, v)
    check("kubernetes schema check rejects fixtures/bad-statefulset.yaml", k8s_schema_rejects_fixture)
    check("kustomization.yaml lists every manifest but the example Secret", kustomization)
    check(f"kubernetes: every resource in namespace {NAMESPACE}", k8s_namespaces)
    for p, d in workloads():
        check(f"kubernetes pod security and resources: {d['kind']}/{d['metadata']['name']}", k8s_pod_security, p, d)
    check("kubernetes: selectors, ports, volumes, ConfigMaps and Secrets resolve", k8s_references)
    check("kubernetes: shards: one StatefulSet, a replica and a volume per map entry, SHARDS_INDEX = pod index, PDB", k8s_shards)
    check("kubernetes: client, device and gateway ids = pod names; every key file in its Secret", k8s_identities_keys)
    check("kubernetes: endpoints and the shard map name Services and pods here", k8s_endpoints_resolve)
    check("kubernetes: ConfigMap apiary-config = Deploy/config/*.yaml (shard map: pod names)", k8s_configmap_matches)
    check("kubernetes: container environment overrides documented keys", k8s_env)

    check("compose.yaml validates against the compose-spec schema", compose_schema)
    check("compose.yaml: hardened; shards, gateway, clients and devices: keys, ids, partitions, endpoints agree", compose_consistency)

    check("Dockerfile passes hadolint", hadolint)
    check("Dockerfile: stages, non-root user, entrypoint, ports, context files", dockerfile_rules)

    for p in files(DEPLOY, ".sh") + files(HERE, ".sh"):
        check(f"shellcheck: {rel(p)}", shellcheck, p)

    check("systemd-analyze verify: Deploy/systemd/*.service, no warnings", systemd_units_verify)
    check("systemd-analyze verify rejects fixtures/bad.service", systemd_rejects_fixture)
    check("systemd-analyze security: exposure at most 2.0", systemd_security)
    check("systemd units: Environment= overrides documented keys", systemd_env)

    check("no CURVE secret key in Deploy/", no_secret_keys)

    summary = f"{passed} passed, {failed} failed"
    if skipped:
        summary += f", {skipped} skipped"
    print(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
