//! The Kubernetes manifests under deploy/kubernetes pass
//! deploy/kubernetes/validate.py (Kubernetes' schemas through
//! kubernetes-validate, KServe's vendored CRDs, odin check-config on every
//! ConfigMap, and what odin needs of its pods), and the validator catches
//! each kind of mistake it exists for.
//!
//! The validator's Python packages come from the virtualenv `.ci/run`
//! makes (`.venv`), or `ODIN_TEST_PYTHON`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python with kubernetes-validate and jsonschema, or `None` (with a
/// note) outside CI.
fn python() -> Option<PathBuf> {
    common::python_with(
        "kubernetes_validate, jsonschema, yaml",
        "kubernetes-validate",
    )
}

fn validate(py: &Path, dir: &Path) -> Output {
    Command::new(py)
        .arg(root().join("deploy/kubernetes/validate.py"))
        .arg(dir)
        .arg("--odin")
        .arg(env!("CARGO_BIN_EXE_odin"))
        .arg("--model")
        .arg(root().join("tests/fixtures/onnx/light/light_bvlc_alexnet.onnx"))
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A copy of the manifests of deploy/kubernetes (validate.py reads the
/// CRDs beside itself).
fn copy_tree(to: &Path) {
    let from = root().join("deploy/kubernetes");
    for sub in ["agent", "serving", "kserve"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for e in std::fs::read_dir(from.join(sub)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, to.join(sub).join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(from.join("namespace.yaml"), to.join("namespace.yaml")).unwrap();
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn the_shipped_manifests_are_valid() {
    let Some(py) = python() else { return };
    let out = validate(&py, &root().join("deploy/kubernetes"));
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for kind in [
        "DaemonSet",
        "Deployment",
        "Service",
        "ConfigMap",
        "ServingRuntime",
        "InferenceService",
    ] {
        assert!(all.contains(kind), "{kind} not validated: {all}");
    }
}

#[test]
fn each_kind_of_mistake_is_caught_and_named() {
    let Some(py) = python() else { return };
    // (file, text, replacement, what the report must say)
    let mistakes = [
        // A misspelt field of a core kind: Kubernetes' schema, strictly.
        (
            "serving/odin-serving.yaml",
            "readinessProbe:",
            "readynessProbe:",
            "readynessProbe",
        ),
        // Half a CPU: not Guaranteed with whole CPUs.
        (
            "serving/odin-serving.yaml",
            "limits:\n              cpu: \"2\"",
            "limits:\n              cpu: 1500m",
            "Guaranteed QoS",
        ),
        // A misspelt field of a KServe kind: its CRD's schema, strictly.
        (
            "kserve/odin-runtime.yaml",
            "autoSelect: false",
            "autoselect: false",
            "autoselect",
        ),
        // A wrong type in a KServe kind.
        (
            "kserve/inferenceservice.yaml",
            "minReplicas: 1",
            "minReplicas: one",
            "minReplicas",
        ),
        // A configuration odin rejects.
        (
            "agent/odin-agent.yaml",
            "      mode: advise",
            "      mode: sometimes",
            "odin check-config",
        ),
        // More privilege than advise mode needs.
        (
            "agent/odin-agent.yaml",
            "add: [PERFMON]",
            "add: [PERFMON, SYS_ADMIN]",
            "SYS_ADMIN is for cgroup enforce mode",
        ),
        // A probe on the wrong path.
        (
            "agent/odin-agent.yaml",
            "path: /v2/health/live\n              port: http\n            periodSeconds: 10",
            "path: /healthz\n              port: http\n            periodSeconds: 10",
            "/v2/health/live expected",
        ),
        // A ConfigMap-mounted configuration without --follow-symlinks.
        (
            "kserve/odin-runtime.yaml",
            "        - --follow-symlinks\n",
            "",
            "--follow-symlinks",
        ),
        // A port the configuration listens on that the pod does not declare.
        (
            "serving/odin-serving.yaml",
            "            - name: metrics\n              containerPort: 9464\n",
            "",
            "metrics port 9464",
        ),
    ];
    for (file, from, to, says) in mistakes {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(dir.path());
        edit(&dir.path().join(file), from, to);
        let out = validate(&py, dir.path());
        let all = text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{file}: {from:?} -> {to:?}: {all}"
        );
        let line = all
            .lines()
            .find(|l| l.contains(says))
            .unwrap_or_else(|| panic!("{file}: {from:?} -> {to:?}: no {says:?} in {all}"));
        assert!(line.starts_with(file), "{line}");
    }
}
