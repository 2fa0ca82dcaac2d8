#!/usr/bin/env python3
"""Validates odin's Kubernetes manifests offline.

    python3 deploy/kubernetes/validate.py --odin target/release/odin \
        --model tests/fixtures/onnx/light/light_bvlc_alexnet.onnx [DIR]

Every YAML document under DIR (default: this directory) is checked:
- core kinds against the Kubernetes OpenAPI schemas that kubernetes-validate
  (PyPI) carries, strictly (an unknown field is an error), for each version
  in KUBERNETES_VERSIONS;
- KServe's ServingRuntime and InferenceService against the openAPIV3Schema
  of their CRDs, vendored in crds/, as strictly: an unknown field is an
  error wherever the schema lists the fields and keeps no unknown ones;
- each ConfigMap's odin.yaml with `odin check-config` (model.path replaced
  by --model, the ONNX file that stands in for the model the pods mount);
- what odin needs of the pods: Guaranteed QoS with whole CPUs for every
  serving container, health probes on /v2/health/ready and /v2/health/live
  at the server's REST port, the ports the configuration listens on,
  --follow-symlinks for a ConfigMap-mounted configuration, no capability
  beyond the systemd unit's (CAP_SYS_ADMIN only for cgroup enforce mode),
  the host's PIDs only where odin names antagonists.

Prints one line per problem, naming the file, the document and the field;
exits 1 if there is any, 0 otherwise.
"""

import argparse
import copy
import functools
import gzip
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
UNIT = HERE.parent.parent / "systemd" / "odin.service"
# The oldest Kubernetes release still maintained upstream, and the newest
# kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.33.0", "1.37.0"]
KSERVE_KINDS = {
    ("serving.kserve.io", "ServingRuntime"): "serving.kserve.io_servingruntimes.yaml.gz",
    ("serving.kserve.io", "InferenceService"): "serving.kserve.io_inferenceservices.yaml.gz",
}
WORKLOADS = {"DaemonSet", "Deployment", "StatefulSet", "Pod"}


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans, as odin reads its
    configuration: `off` and `no` are strings (cgroup.mode: off), only
    true and false are booleans."""


Yaml12Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class Problems:
    def __init__(self):
        self.lines = []

    def add(self, where, text):
        self.lines.append(f"{where}: {text}")


def documents(root):
    """(where, document) of every YAML document under root; where names
    the file, the document's place in it, its kind and name."""
    for path in sorted(root.rglob("*.yaml")):
        file = path.relative_to(root)
        if "crds" in file.parts:
            continue
        with open(path) as f:
            for i, doc in enumerate(yaml.safe_load_all(f)):
                if doc is not None:
                    name = doc.get("metadata", {}).get("name")
                    yield f"{file} document {i + 1} ({doc.get('kind')} {name})", doc


@functools.cache
def crd_schema(file_name, api_version):
    with gzip.open(HERE / "crds" / file_name, "rt") as f:
        # libyaml's parser where PyYAML has it: the CRDs are 2 MB.
        crd = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = api_version.split("/", 1)[1]
    for v in crd["spec"]["versions"]:
        if v["name"] == version and v.get("served"):
            return strict(v["schema"]["openAPIV3Schema"])
    return None


def strict(schema):
    """The schema with unknown fields refused where it lists the fields
    and does not keep unknown ones (what kubectl's strict field validation
    does on a server)."""
    schema = copy.deepcopy(schema)

    def walk(s):
        if not isinstance(s, dict):
            return
        if (
            "properties" in s
            and "additionalProperties" not in s
            and not s.get("x-kubernetes-preserve-unknown-fields")
        ):
            s["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for sub in s.get(key, {}).values():
                walk(sub)
        for key in ("items", "additionalProperties", "not"):
            walk(s.get(key))
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in s.get(key, []):
                walk(sub)

    walk(schema)
    return schema


def field_path(error):
    return ".".join(str(p) for p in error.absolute_path) or "(document)"


def unit_capabilities():
    for line in UNIT.read_text().splitlines():
        if line.startswith("CapabilityBoundingSet="):
            return {c.removeprefix("CAP_") for c in line.split("=", 1)[1].split()}
    raise SystemExit(f"{UNIT}: no CapabilityBoundingSet=")


def port_of(address):
    return None if address is None else int(str(address).rsplit(":", 1)[1])


def check_config(text, where, odin, model, problems):
    """Runs odin check-config on an odin.yaml; returns the effective
    configuration (as check-config prints it), or None."""
    cfg = yaml.load(text, Loader=Yaml12Loader) or {}
    mounted = (cfg.get("model") or {}).get("path")
    if mounted:
        # The text itself, comments and all, with only the path replaced.
        text = text.replace(mounted, str(Path(model).resolve()))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "odin.yaml"
        path.write_text(text)
        os.chmod(path, 0o644)
        out = subprocess.run(
            [odin, "check-config", str(path)], capture_output=True, text=True
        )
    if out.returncode != 0:
        problems.add(where, f"odin check-config: {out.stderr.strip()}")
        return None
    return yaml.load(out.stdout, Loader=Yaml12Loader)


def containers_of(doc):
    """(pod spec, containers with their field path) of a workload, a
    ServingRuntime or an InferenceService predictor."""
    kind = doc["kind"]
    spec = doc.get("spec") or {}
    if kind == "Pod":
        pod = spec
    elif kind in WORKLOADS:
        pod = spec["template"]["spec"]
    elif kind == "ServingRuntime":
        pod = spec
    elif kind == "InferenceService":
        predictor = spec["predictor"]
        return predictor, [("spec.predictor.model", predictor["model"])]
    else:
        return None, []
    base = "spec" if kind in ("Pod", "ServingRuntime") else "spec.template.spec"
    found = []
    for key in ("initContainers", "containers"):
        for i, c in enumerate(pod.get(key) or []):
            found.append((f"{base}.{key}[{i}]", c))
    return pod, found


def quantity(text):
    """CPUs of a Kubernetes quantity ("2", "1500m", 2)."""
    text = str(text)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def check_guaranteed(where, containers, problems):
    for path, c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        for r in ("cpu", "memory"):
            if r not in lim or str(req.get(r, lim[r])) != str(lim[r]):
                problems.add(
                    where,
                    f"{path}.resources: {r} requests must equal limits for "
                    f"Guaranteed QoS (requests {req.get(r)}, limits {lim.get(r)})",
                )
        if "cpu" in lim and not quantity(lim["cpu"]).is_integer():
            problems.add(
                where,
                f"{path}.resources.limits.cpu: {lim['cpu']} is not a whole number of "
                "CPUs; the static CPU manager gives exclusive cores only to whole CPUs",
            )


def probe_path(c, kind):
    """The path and port of a container's HTTP probe of this kind."""
    get = (c.get(kind) or {}).get("httpGet") or {}
    return get.get("path"), get.get("port")


def check_odin_container(where, path, c, cfg, problems):
    """Probes, ports and flags of a container running odin with the
    effective configuration cfg, mounted from a ConfigMap."""
    args = c.get("args") or []
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
    numbers = set(ports.values())
    http = port_of(cfg["server"]["http"]) if cfg["server"]["enabled"] else None
    if "--http" in args:
        http = port_of(args[args.index("--http") + 1])
    for kind, want in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
        got, port = probe_path(c, kind)
        if got != want:
            problems.add(where, f"{path}.{kind}: httpGet {want} expected, not {got}")
        elif ports.get(port, port) != http:
            problems.add(where, f"{path}.{kind}: port {port} is not the REST port {http}")
    for name, listen in (
        ("REST", cfg["server"]["http"] if cfg["server"]["enabled"] else None),
        ("gRPC", cfg["server"]["grpc"] if cfg["server"]["enabled"] else None),
        ("metrics", cfg["metrics"]["listen"] if cfg["metrics"]["enabled"] else None),
    ):
        port = port_of(listen)
        if port is not None and port not in numbers:
            problems.add(where, f"{path}.ports: odin's {name} port {port} ({listen}) is not declared")
        if port is not None and str(listen).startswith("127."):
            problems.add(where, f"odin's {name} listens on loopback {listen}: unreachable from outside the pod")
    if "--follow-symlinks" not in args:
        problems.add(
            where,
            f"{path}.args: a ConfigMap volume's files are symbolic links; odin refuses them "
            "without --follow-symlinks",
        )


def check_privileges(where, pod, path, c, cfg, allowed_caps, problems):
    sc = c.get("securityContext") or {}
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        problems.add(where, f"{path}.securityContext.capabilities.drop: ALL expected")
    added = set(caps.get("add") or [])
    if added - allowed_caps:
        problems.add(
            where,
            f"{path}.securityContext.capabilities.add: {sorted(added - allowed_caps)} "
            f"beyond the systemd unit's {sorted(allowed_caps)}",
        )
    if "SYS_ADMIN" in added and cfg["cgroup"]["mode"] != "enforce":
        problems.add(
            where,
            f"{path}.securityContext.capabilities.add: SYS_ADMIN is for cgroup enforce mode "
            f"only; cgroup.mode is {cfg['cgroup']['mode']}",
        )
    if sc.get("privileged") or sc.get("allowPrivilegeEscalation", True):
        problems.add(where, f"{path}.securityContext: privileged or privilege escalation")
    host_pid = bool(pod.get("hostPID"))
    naming = cfg["monitor"]["antagonists"]
    if host_pid and not naming:
        problems.add(where, "hostPID: only antagonist naming needs it, and monitor.antagonists is off")
    if naming and not host_pid:
        problems.add(
            where,
            "monitor.antagonists is on, but without hostPID the pod sees only its own "
            "processes: set hostPID, or turn monitor.antagonists off",
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", default=str(HERE))
    ap.add_argument("--odin", required=True, help="the odin binary, for check-config")
    ap.add_argument("--model", required=True, help="an ONNX file standing in for model.path")
    args = ap.parse_args()
    root = Path(args.dir)
    problems = Problems()
    allowed_caps = unit_capabilities()
    docs = list(documents(root))
    if not docs:
        raise SystemExit(f"{root}: no manifests")

    configs = {}
    for where, doc in docs:
        api = doc.get("apiVersion", "")
        group = api.split("/")[0] if "/" in api else ""
        crd = KSERVE_KINDS.get((group, doc.get("kind")))
        if crd:
            schema = crd_schema(crd, api)
            if schema is None:
                problems.add(where, f"{api} is not a served version of the vendored CRD {crd}")
            else:
                for e in sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str):
                    problems.add(where, f"{field_path(e)}: {e.message}")
        else:
            for v in KUBERNETES_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, v, strict=True)
                except kubernetes_validate.ValidationError as e:
                    problems.add(where, f"Kubernetes {v}: {field_path(e)}: {e.message}")
                except kubernetes_validate.SchemaNotFoundError as e:
                    problems.add(where, f"Kubernetes {v}: no schema: {e}")
        if doc.get("kind") == "ConfigMap" and "odin.yaml" in (doc.get("data") or {}):
            cfg = check_config(doc["data"]["odin.yaml"], where, args.odin, args.model, problems)
            if cfg is not None:
                configs[(doc["metadata"].get("namespace"), doc["metadata"]["name"])] = cfg

    for where, doc in docs:
        pod, containers = containers_of(doc)
        if pod is None:
            continue
        serving = doc["kind"] != "Pod"
        if serving:
            check_guaranteed(where, containers, problems)
        if doc["kind"] == "InferenceService":
            continue
        ns = doc["metadata"].get("namespace")
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for path, c in containers:
            if c.get("name") not in ("odin", "kserve-container"):
                continue
            cfg = None
            for m in c.get("volumeMounts") or []:
                v = volumes.get(m["name"], {})
                if "configMap" in v and m["mountPath"] == "/etc/odin":
                    cfg = configs.get((ns, v["configMap"]["name"]))
            if cfg is None:
                problems.add(where, f"{path}: no ConfigMap with a valid odin.yaml mounted at /etc/odin")
                continue
            check_odin_container(where, path, c, cfg, problems)
            check_privileges(where, pod, path, c, cfg, allowed_caps, problems)

    for line in problems.lines:
        print(line)
    kinds = sorted({d.get("kind") for _, d in docs})
    if problems.lines:
        print(f"validate.py: {len(problems.lines)} problem(s) in {len(docs)} documents", file=sys.stderr)
        return 1
    print(f"validate.py: {len(docs)} documents ({', '.join(kinds)}) valid against Kubernetes "
          f"{', '.join(KUBERNETES_VERSIONS)} and KServe's CRDs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
