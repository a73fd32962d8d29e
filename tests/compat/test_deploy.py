"""The deployment files (design §13) against the real Kubernetes schemas and the real helm:
every manifest in deploy/kubernetes and everything the chart renders, in both modes, passes
`kubernetes-validate --strict` for a recent Kubernetes (one that knows native sidecars), and
has the shape the design asks for: PlanGate as a native sidecar gated by a startupProbe on
/readyz, the catalog from a ConfigMap mounted as a directory (hot reload through the symlink
swap), the token from a Secret, the provider on a Unix socket in a shared emptyDir; shared
mode as replicas on PostgreSQL with a PodDisruptionBudget. Every PLANGATE_* variable the
files set is a real `plangate serve` setting, and every catalog they carry loads."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from plangate.sidecar.catalog import load_catalog
from plangate.sidecar.settings import declarations
from support.helm import helm_binary
from support.sidecar import ROOT

KUBERNETES = "1.35.0"
MANIFESTS = ROOT / "deploy" / "kubernetes"
CHART = ROOT / "deploy" / "helm" / "plangate"
SETTINGS = {d.env for d in declarations()}
SHARED = ["--set", "mode=shared", "--set", "token.secretName=plangate-token"]
TLS = ["--set", "tls.secretName=plangate-tls", "--set", "tls.clientCaKey=ca.crt"]

Doc = dict[str, Any]


def load(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


def manifests() -> list[Doc]:
    return [d for f in sorted(MANIFESTS.glob("*.yaml")) for d in load(f.read_text())]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def valid(docs: list[Doc]) -> None:
    """Each document against the schema of its kind; strict: unknown fields are errors."""
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=60)


def render(helm: Path, *values: str) -> list[Doc]:
    run = run_helm(helm, "template", "demo", str(CHART), *values)
    assert run.returncode == 0, run.stderr
    return load(run.stdout)


# -- what a pod must look like -----------------------------------------------------------------


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def mounts(container: Doc) -> dict[str, Doc]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def plangate_container(container: Doc) -> None:
    """Probes are exec `plangate health`, hardened, sized, catalog from a ConfigMap directory."""
    assert container["startupProbe"]["exec"]["command"] == ["plangate", "health", "--ready"]
    assert container["readinessProbe"]["exec"]["command"] == ["plangate", "health", "--ready"]
    assert container["livenessProbe"]["exec"]["command"] == ["plangate", "health"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    env = env_of(container)
    assert set(env) <= SETTINGS, f"not plangate serve settings: {set(env) - SETTINGS}"
    catalog = Path(env["PLANGATE_CATALOG"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(catalog.parent))
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
    assert mount["readOnly"] is True


def volumes(pod: Doc) -> dict[str, Doc]:
    return {v["name"]: v for v in pod["volumes"]}


def non_root(pod: Doc) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER


def native_sidecar_pod(deployment: Doc) -> None:
    pod = deployment["spec"]["template"]["spec"]
    non_root(pod)
    (sidecar,) = [c for c in pod["initContainers"] if c["name"] == "plangate"]
    assert sidecar["restartPolicy"] == "Always"  # what makes an init container a native sidecar
    plangate_container(sidecar)
    vols = volumes(pod)
    env = env_of(sidecar)
    catalog_volume = next(
        vols[m["name"]] for m in sidecar["volumeMounts"] if m["mountPath"] == "/etc/plangate"
    )
    assert "configMap" in catalog_volume
    token = Path(env["PLANGATE_TOKEN_FILE"]["value"])
    token_mount = next(m for m in sidecar["volumeMounts"] if m["mountPath"] == str(token.parent))
    assert "secret" in vols[token_mount["name"]]
    socket = Path(env["PLANGATE_SOCKET"]["value"])
    socket_mount = next(m for m in sidecar["volumeMounts"] if m["mountPath"] == str(socket.parent))
    assert "emptyDir" in vols[socket_mount["name"]]
    (app,) = pod["containers"]
    assert mounts(app)[socket_mount["name"]]["mountPath"] == str(socket.parent)
    assert env_of(app)["PLANGATE_TARGET"]["value"] == f"unix://{socket}"
    assert (
        env_of(app)["PLANGATE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"]
        == (vols[token_mount["name"]]["secret"]["secretName"])
    )
    state = mounts(sidecar)["state"]["mountPath"]
    assert env["PLANGATE_DB"]["value"].startswith(state + "/")  # writable despite read-only root
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one SQLite writer at a time


def shared_mode(docs: list[Doc]) -> None:
    (deployment,) = of_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] > 1
    pod = deployment["spec"]["template"]["spec"]
    non_root(pod)
    (plangate,) = pod["containers"]
    plangate_container(plangate)
    env = env_of(plangate)
    assert env["PLANGATE_DB"]["valueFrom"]["secretKeyRef"]["key"]
    assert env["PLANGATE_HOST"]["value"] == "0.0.0.0"
    assert "PLANGATE_TOKEN_FILE" in env  # reached over the network: not without the token
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (pdb,) = of_kind(docs, "PodDisruptionBudget")
    (service,) = of_kind(docs, "Service")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"] for p in plangate["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def catalogs_load(docs: list[Doc], tmp_path: Path) -> None:
    maps = [d for d in of_kind(docs, "ConfigMap") if "catalog.yaml" in d["data"]]
    assert maps
    for i, config_map in enumerate(maps):
        path = tmp_path / f"catalog-{i}.yaml"
        path.write_text(config_map["data"]["catalog.yaml"])
        assert load_catalog(str(path)).features


# -- the plain manifests -----------------------------------------------------------------------


def test_the_manifests_pass_the_kubernetes_schemas_strictly() -> None:
    docs = manifests()
    valid(docs)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ConfigMap", "Deployment", "Deployment", "PersistentVolumeClaim",
        "PodDisruptionBudget", "Service",
    ]  # fmt: skip


def test_the_app_manifest_runs_plangate_as_a_native_sidecar(tmp_path: Path) -> None:
    docs = manifests()
    (app,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "example-app"]
    native_sidecar_pod(app)
    catalogs_load(docs, tmp_path)


def test_the_shared_manifest_runs_replicas_on_postgresql() -> None:
    docs = [d for d in manifests() if d["metadata"]["name"] == "plangate"]
    shared_mode(docs)


def test_the_containerfile_sets_only_real_settings() -> None:
    text = (ROOT / "Containerfile").read_text()
    used = set(re.findall(r"\bPLANGATE_[A-Z_]+", text))
    assert {"PLANGATE_CATALOG", "PLANGATE_DB"} <= used <= SETTINGS
    assert 'CMD ["plangate", "health", "--ready"]' in text


# -- the chart ---------------------------------------------------------------------------------


def test_helm_lint_passes_in_both_modes(helm: Path) -> None:
    for values in ([], SHARED + TLS):
        run = run_helm(helm, "lint", "--strict", str(CHART), *values)
        assert run.returncode == 0, run.stdout + run.stderr


def test_the_chart_renders_the_native_sidecar_layout(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, "--set", "token.secretName=plangate-token")
    valid(docs)
    (deployment,) = of_kind(docs, "Deployment")
    native_sidecar_pod(deployment)
    assert of_kind(docs, "PersistentVolumeClaim")
    catalogs_load(docs, tmp_path)


def test_the_chart_renders_shared_mode_with_tls(helm: Path) -> None:
    docs = render(helm, *SHARED, *TLS, "--set", "shared.replicas=4")
    valid(docs)
    shared_mode(docs)
    (deployment,) = of_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 4
    (plangate,) = deployment["spec"]["template"]["spec"]["containers"]
    env = env_of(plangate)
    assert env["PLANGATE_TLS_CLIENT_CA"]["value"] == "/etc/plangate-tls/ca.crt"
    assert plangate["image"].endswith(":0.1.0-postgres")


def test_the_chart_takes_a_catalog_file_or_an_existing_config_map(
    helm: Path, tmp_path: Path
) -> None:
    inline = render(helm, "--set-file", f"catalog.inline={ROOT / 'examples' / 'catalog.yaml'}")
    valid(inline)
    catalogs_load(inline, tmp_path)
    existing = render(helm, "--set", "catalog.existingConfigMap=my-catalog")
    valid(existing)
    assert not of_kind(existing, "ConfigMap")
    pod = of_kind(existing, "Deployment")[0]["spec"]["template"]["spec"]
    assert volumes(pod)["catalog"]["configMap"]["name"] == "my-catalog"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "mode=shared"], "set token.secretName"),
        (["--set", "mode=sidecar"], 'mode must be embedded or shared, not "sidecar"'),
        (["--set", "catalog.inline="], "give the catalog: --set-file catalog.inline="),
    ],
)
def test_the_chart_refuses_what_cannot_work(helm: Path, values: list[str], message: str) -> None:
    run = run_helm(helm, "template", "demo", str(CHART), *values)
    assert run.returncode != 0
    assert message in run.stderr


def iter_containers(docs: list[Doc]) -> Iterator[Doc]:
    for d in of_kind(docs, "Deployment"):
        pod = d["spec"]["template"]["spec"]
        yield from pod.get("initContainers", []) + pod["containers"]


def test_extra_env_reaches_the_plangate_container(helm: Path) -> None:
    docs = render(
        helm,
        "--set", "extraEnv[0].name=PLANGATE_HISTORY_DAYS",
        "--set-string", "extraEnv[0].value=90",
    )  # fmt: skip
    valid(docs)
    (plangate,) = [c for c in iter_containers(docs) if c["name"] == "plangate"]
    assert env_of(plangate)["PLANGATE_HISTORY_DAYS"]["value"] == "90"
