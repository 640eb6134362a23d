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
    capabilities, requests and limits, one aggregator replica, Services select pods and name
    their ports, mounted ConfigMaps and Secrets exist, kustomization.yaml lists the manifests;
  - the ConfigMap carries exactly Deploy/config/*.yaml; every config key in Deploy/ is a key
    documented in Configs/*.yaml, and every environment variable given to an apiary process
    overrides such a key (a typo would be ignored silently by the binary);
  - compose.yaml validates against the compose-spec schema; client ids, keys and partitions agree;
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


DOC_KEYS = {
    "aggregator": documented_keys(CONFIGS / "aggregator.yaml"),
    "client": documented_keys(CONFIGS / "client.yaml"),
}
ENV_NAMES = {role: {env_name(k) for k in keys} for role, keys in DOC_KEYS.items()}


def config_keys_documented(p: Path, role: str) -> None:
    cfg = yaml.safe_load(p.read_text()) or {}
    unknown = sorted(flatten(cfg) - DOC_KEYS[role])
    if unknown:
        raise Failure(f"keys not documented in Configs/{role}.yaml (the binary would ignore them): {unknown}")


def env_documented(where: str, role: str, names: list[str]) -> None:
    unknown = sorted(set(names) - ENV_NAMES[role])
    if unknown:
        raise Failure(f"{where}: {unknown} override no key of Configs/{role}.yaml")
    if not names:
        raise Skip("no environment variables")


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


def container_role(c: dict) -> str | None:
    args = (c.get("command") or []) + (c.get("args") or [])
    for role in ("aggregator", "client"):
        if role in args:
            return role
    return None


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
        if any(labels.get(k) != v for k, v in sel.items()):
            bad.append(f"{d['metadata']['name']}: selector does not match the template labels")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in d["spec"].get("volumeClaimTemplates", [])}
        ports = set()
        for c in spec["containers"]:
            ports |= {pt.get("name") for pt in c.get("ports", [])}
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes and m["name"] not in claims:
                    bad.append(f"{c['name']}: mounts undefined volume {m['name']}")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                pr = c.get(probe)
                if pr:
                    port = (pr.get("tcpSocket") or pr.get("httpGet") or {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        bad.append(f"{c['name']}: {probe} names port {port}, which the container lacks")
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
        pods.append((labels, ports))
        if d["kind"] == "StatefulSet":
            svc = [s for _, s in docs if s["kind"] == "Service" and s["metadata"]["name"] == d["spec"]["serviceName"]]
            if not svc or svc[0]["spec"].get("clusterIP") != "None":
                bad.append(f"{d['metadata']['name']}: serviceName {d['spec']['serviceName']} is not a headless Service here")
    for _, s in docs:
        if s["kind"] != "Service":
            continue
        sel = s["spec"].get("selector", {})
        matching = [ports for labels, ports in pods if all(labels.get(k) == v for k, v in sel.items())]
        if not matching:
            bad.append(f"Service {s['metadata']['name']} selects no pod")
        for pt in s["spec"].get("ports", []):
            tp = pt.get("targetPort")
            if isinstance(tp, str) and not any(tp in ports for ports in matching):
                bad.append(f"Service {s['metadata']['name']}: targetPort {tp} is no named container port")
    for _, pdb in docs:
        if pdb["kind"] == "PodDisruptionBudget":
            sel = pdb["spec"]["selector"]["matchLabels"]
            if not any(all(labels.get(k) == v for k, v in sel.items()) for labels, _ in pods):
                bad.append(f"PodDisruptionBudget {pdb['metadata']['name']} selects no pod")
    if bad:
        raise Failure("\n".join(bad))


def k8s_aggregator_single() -> None:
    aggs = [d for _, d in workloads() if any(container_role(c) == "aggregator" for c in d["spec"]["template"]["spec"]["containers"])]
    if len(aggs) != 1:
        raise Failure(f"{len(aggs)} aggregator workloads, expected 1")
    a = aggs[0]
    if a["kind"] != "StatefulSet" or a["spec"].get("replicas") != 1:
        raise Failure("the aggregator must be a StatefulSet with replicas: 1 (sharding is not implemented)")
    if not a["spec"].get("volumeClaimTemplates"):
        raise Failure("the aggregator has no volumeClaimTemplates for its state")


def k8s_clients_keys() -> None:
    """Each client pod reads /etc/apiary/keys/<pod name>.secret: the example Secret must show one
    per replica, and the key file must follow the id."""
    bad = []
    secrets = {d["metadata"]["name"]: d for _, d in k8s_docs() if d["kind"] == "Secret"}
    for _, d in workloads():
        for c in d["spec"]["template"]["spec"]["containers"]:
            if container_role(c) != "client":
                continue
            env = {e["name"]: e for e in c.get("env", [])}
            if (env.get("CLIENT_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")) != "metadata.name":
                bad.append("CLIENT_ID is not the pod name (downward API metadata.name)")
            if "$(CLIENT_ID)" not in env.get("SECURITY_SECRET_KEY_FILE", {}).get("value", ""):
                bad.append("SECURITY_SECRET_KEY_FILE does not follow $(CLIENT_ID)")
            if d["kind"] != "StatefulSet":
                bad.append(f"clients in a {d['kind']}: pod names are not stable, no key can be authorized for them")
            vols = [v for v in d["spec"]["template"]["spec"]["volumes"] if "secret" in v]
            for v in vols:
                data = secrets[v["secret"]["secretName"]].get("stringData", {})
                want = [f"{d['metadata']['name']}-{i}.secret" for i in range(d["spec"]["replicas"])]
                missing = [w for w in want if w not in data]
                if missing:
                    bad.append(f"Secret {v['secret']['secretName']} lacks {missing}")
                if "aggregator.public" not in data:
                    bad.append(f"Secret {v['secret']['secretName']} lacks aggregator.public")
            if d["spec"]["replicas"] > len(PARTITIONS):
                bad.append(f"{d['spec']['replicas']} replicas but only {len(PARTITIONS)} partitions")
    if bad:
        raise Failure("\n".join(bad))


def k8s_configmap_matches() -> None:
    cm = [d for _, d in k8s_docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "apiary-config"]
    if len(cm) != 1:
        raise Failure("no ConfigMap apiary-config")
    bad = []
    for name in ("aggregator.yaml", "client.yaml"):
        if cm[0]["data"].get(name) != (DEPLOY / "config" / name).read_text():
            bad.append(f"data[{name}] differs from Deploy/config/{name}")
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


def compose_consistency() -> None:
    c = yaml.safe_load(COMPOSE.read_text())
    services = c["services"]
    bad = []
    keygen = [s for s in services.values() if "apiary-keys-init" in (s.get("entrypoint") or [])]
    if len(keygen) != 1:
        raise Failure("no single key service (entrypoint apiary-keys-init)")
    authorized = keygen[0]["command"][2:]
    ids, parts = [], []
    for name, s in services.items():
        if s.get("privileged") or str(s.get("user", "")).split(":")[0] in ("root", "0"):
            bad.append(f"{name}: runs privileged or as root")
        if s.get("read_only") is not True or s.get("cap_drop") != ["ALL"]:
            bad.append(f"{name}: not read_only with cap_drop [ALL]")
        cmd = s.get("command") or []
        env = s.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        role = cmd[0] if cmd and cmd[0] in ("aggregator", "client") else None
        if role:
            try:
                env_documented(f"service {name}", role, list(env))
            except Failure as f:
                bad.append(str(f))
            except Skip:
                pass
        if role == "aggregator":
            if "healthcheck" not in s:
                bad.append(f"{name}: no healthcheck")
            if not any(str(v).endswith(":/var/lib/apiary") for v in s.get("volumes", [])):
                bad.append(f"{name}: no volume at /var/lib/apiary")
        if role == "client":
            cid = env.get("CLIENT_ID", "")
            ids.append(cid)
            if not CLIENT_ID.match(cid):
                bad.append(f"{name}: CLIENT_ID {cid!r} is not a valid client id")
            if cid not in authorized:
                bad.append(f"{name}: {cid} gets no key from the key service")
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
            targets = [s] if (ROOT / s).is_file() else [rel(p) for p in (ROOT / s).rglob("*") if p.is_file()][:50]
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
    sysinit.target and friends), a stub /opt/apiary/bin/apiary, and the units under test."""
    root = Path(tempfile.mkdtemp(prefix="apiary-systemd-"))
    for src in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if src.is_dir():
            shutil.copytree(src, root / "usr/lib/systemd/system", symlinks=True)
            break
    (root / "opt/apiary/bin").mkdir(parents=True)
    stub = root / "opt/apiary/bin/apiary"
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
        role = "client" if "client" in u.name else "aggregator"
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

    for p in files(DEPLOY / "config", ".yaml"):
        role = p.stem
        check(f"config keys documented in Configs/{role}.yaml: {rel(p)}", config_keys_documented, p, role)

    for p in k8s_manifests():
        for v in K8S_VERSIONS:
            check(f"kubernetes {v} schema (strict): {rel(p)}", k8s_schema, p, v)
    check("kubernetes schema check rejects fixtures/bad-statefulset.yaml", k8s_schema_rejects_fixture)
    check("kustomization.yaml lists every manifest but the example Secret", kustomization)
    check(f"kubernetes: every resource in namespace {NAMESPACE}", k8s_namespaces)
    for p, d in workloads():
        check(f"kubernetes pod security and resources: {d['kind']}/{d['metadata']['name']}", k8s_pod_security, p, d)
    check("kubernetes: selectors, ports, volumes, ConfigMaps and Secrets resolve", k8s_references)
    check("kubernetes: one aggregator, a StatefulSet with replicas 1 and a state volume", k8s_aggregator_single)
    check("kubernetes: client id = pod name, one key per client pod", k8s_clients_keys)
    check("kubernetes: ConfigMap apiary-config = Deploy/config/*.yaml", k8s_configmap_matches)
    check("kubernetes: container environment overrides documented keys", k8s_env)

    check("compose.yaml validates against the compose-spec schema", compose_schema)
    check("compose.yaml: services hardened, client ids, keys and partitions agree", compose_consistency)

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
