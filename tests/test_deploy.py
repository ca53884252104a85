"""The deployment files agree with the code: Dockerfile, .dockerignore, compose.yaml,
deploy/kubernetes/, and the entry point they all run (scripts/container.py), plus the Citus
layout (scripts/citus_check.py). No Docker, no cluster, no database: files parsed, names and
ports checked against what the code reads, the entry point run on this machine.
"""

from __future__ import annotations

import ast
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import citus_check, container, migrate, pidfiles, plan
from scripts.pidfiles import GROUP_GRACE, KILL_GRACE, LEADER_GRACE

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
#: Settings whose values are secrets: never a literal in a manifest.
SECRET_NAMES = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|DATABASE_URL)$")
PLACEHOLDER = "placeholder-for-tests"
STOP_BUDGET = LEADER_GRACE + GROUP_GRACE + KILL_GRACE


# -- what the code reads ------------------------------------------------------------------------


def _read_names() -> tuple[set[str], set[str]]:
    """``GOVRIX_*`` names in the code (string constants outside docstrings), and prefixes the
    code builds names from (``f"GOVRIX_RATE_{tier}"``, ``startswith("GOVRIX_UPSTREAM_")``)."""
    exact: set[str] = set()
    prefixes: set[str] = set()
    name, prefix = re.compile(r"GOVRIX_[A-Z0-9_]*[A-Z0-9]"), re.compile(r"GOVRIX_[A-Z0-9]+_")
    for d in ("addon", "api", "scripts"):
        for path in (ROOT / d).rglob("*.py"):
            source = path.read_text()
            if "GOVRIX_" not in source:
                continue
            tree = ast.parse(source, str(path))
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                and node.body
                and isinstance(node.body[0], ast.Expr)
                and isinstance(node.body[0].value, ast.Constant)
            }
            for node in ast.walk(tree):
                if isinstance(node, ast.JoinedStr) and node.values:
                    head = node.values[0]
                    if (
                        isinstance(head, ast.Constant)
                        and isinstance(head.value, str)
                        and prefix.fullmatch(head.value)
                    ):
                        prefixes.add(head.value)
                elif (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in docstrings
                ):
                    if name.fullmatch(node.value):
                        exact.add(node.value)
                    elif prefix.fullmatch(node.value):
                        prefixes.add(node.value)
    return exact, prefixes


READ_EXACT, READ_PREFIXES = _read_names()


def unknown(names: Any) -> list[str]:
    return sorted(
        n
        for n in names
        if n.startswith("GOVRIX_")
        and n not in READ_EXACT
        and not any(n.startswith(p) and n != p for p in READ_PREFIXES)
    )


def test_the_name_scan_finds_what_config_reads() -> None:
    # The scan itself: names the proxy and the API read, prefixes they build names from.
    for n in ("GOVRIX_DATABASE_URL", "GOVRIX_PROXY_WORKERS", "GOVRIX_FAIL_MODE", "GOVRIX_API_KEY"):
        assert n in READ_EXACT
    assert "GOVRIX_UPSTREAM_" in READ_PREFIXES and "GOVRIX_RATE_" in READ_PREFIXES
    assert unknown(["GOVRIX_UPSTREAM_OPENAI", "GOVRIX_RATE_PRO"]) == []
    assert unknown(["GOVRIX_PROXY_WORKRES", "GOVRIX_UPSTREAM_"]) == [
        "GOVRIX_PROXY_WORKRES",
        "GOVRIX_UPSTREAM_",
    ]


# -- Dockerfile and .dockerignore ---------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        instr, _, args = full.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


def _json_or_words(args: str) -> list[str]:
    args = args.strip()
    if args.startswith("["):
        return list(yaml.safe_load(args))
    return args.split()


def _env_pairs(args: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)=("[^"]*"|\S+)', args))


@pytest.fixture(scope="module")
def docker() -> dict[str, Any]:
    ins = dockerfile()
    args = {k: v for i, a in ins if i == "ARG" for k, _, v in [a.partition("=")]}
    env: dict[str, str] = {}
    for i, a in ins:
        if i == "ENV":
            env.update(_env_pairs(a))
    return {"ins": ins, "args": args, "env": env}


def test_dockerfile_base_and_locked_install(docker: dict[str, Any]) -> None:
    froms = [a.split()[0] for i, a in docker["ins"] if i == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    for f in froms:
        assert re.sub(r"\$\{(\w+)\}", lambda m: docker["args"][m.group(1)], f) == (
            "python:3.12-slim"
        )
    syncs = [a for i, a in docker["ins"] if i == "RUN" and "uv sync" in a]
    assert syncs, "the environment comes from uv.lock through uv sync"
    for s in syncs:
        assert "--frozen" in s
        assert "--no-default-groups" in s or "--no-dev" in s
    copies = [a.split() for i, a in docker["ins"] if i == "COPY"]
    assert ["pyproject.toml", "uv.lock", "./"] in copies


def test_dockerfile_user_volume_healthcheck_entrypoint(docker: dict[str, Any]) -> None:
    ins = docker["ins"]
    user = [a for i, a in ins if i == "USER"][-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric, unprivileged user"
    assert f"--uid {uid}" in next(a for i, a in ins if i == "RUN" and "useradd" in a)

    env = docker["env"]
    assert unknown(env) == []
    home = env["GOVRIX_HOME"]
    volumes = [v for i, a in ins if i == "VOLUME" for v in _json_or_words(a)]
    assert f"{home}/mitmproxy" in volumes, "the CA store (confdir) is a volume"
    assert home in volumes, "the spool is a volume"
    assert Path(home, "mitmproxy") == container.confdir({"GOVRIX_HOME": home})

    entry = _json_or_words(next(a for i, a in ins if i == "ENTRYPOINT"))
    assert entry == ["python", "-m", "scripts.container"]
    cmd = _json_or_words(next(a for i, a in ins if i == "CMD"))
    assert container.parser().parse_args(cmd).cmd in container.ROLES

    hc = next(a for i, a in ins if i == "HEALTHCHECK")
    probe = _json_or_words(hc.split("CMD", 1)[1])
    assert probe[:3] == entry
    assert container.parser().parse_args(probe[3:]).cmd == "health"

    exposed = {int(p) for i, a in ins if i == "EXPOSE" for p in a.split()}
    assert exposed == {plan.PROXY_PORT, plan.API_PORT} == {4000, 4001}


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pat in patterns:
        negate = pat.startswith("!")
        p = pat[1:] if negate else pat
        p = p.rstrip("/")
        if p.startswith("**/"):
            hit = any(fnmatchcase(c.split("/")[-1], p[3:]) for c in candidates)
        else:
            hit = any(fnmatchcase(c, p) and c.count("/") == p.count("/") for c in candidates)
        if hit:
            excluded = not negate
    return excluded


def test_dockerignore_keeps_secrets_out_and_sources_in(docker: dict[str, Any]) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for secret in (".govrix/api_key", ".govrix/pg/password", ".govrix/mitmproxy/mitmproxy-ca.pem"):
        assert _ignored(secret, patterns), secret
    for other in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/test_deploy.py",
        "addon/__pycache__/x.pyc",
    ):
        assert _ignored(other, patterns), other
    # Every source the Dockerfile copies from the context exists and is in the context.
    for i, a in docker["ins"]:
        if i != "COPY" or a.startswith("--from"):
            continue
        for src in a.split()[:-1]:
            assert (ROOT / src).exists(), src
            assert not _ignored(src, patterns), src
            if (ROOT / src).is_dir():
                sample = next(p for p in (ROOT / src).rglob("*") if p.is_file())
                assert not _ignored(str(sample.relative_to(ROOT)), patterns), sample


# -- compose.yaml -------------------------------------------------------------------------------

_INTERP = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``: defaults, else a placeholder."""
    return _INTERP.sub(lambda m: m.group(3) if m.group(2) == "-" else PLACEHOLDER, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _svc_env(svc: Mapping[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    assert isinstance(env, dict), "environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def test_compose_services_commands_and_order(compose: dict[str, Any]) -> None:
    s = compose["services"]
    assert set(s) == {"postgres", "migrate", "api", "proxy"}
    assert re.fullmatch(r"postgres:\d+", s["postgres"]["image"])
    for role in ("migrate", "api", "proxy"):
        assert s[role]["build"] == "." and s[role]["image"] == s["api"]["image"]
        assert container.parser().parse_args(s[role]["command"]).cmd == role
    assert s["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for role in ("api", "proxy"):
        assert s[role]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
        test = s[role]["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "scripts.container"]
        parsed = container.parser().parse_args(test[4:])
        assert (parsed.cmd, parsed.role) == ("health", role)
    assert "pg_isready" in s["postgres"]["healthcheck"]["test"]
    assert s["migrate"]["healthcheck"] == {"disable": True}
    assert "GOVRIX_PROXY_WORKERS" in s["proxy"]["environment"]
    grace = s["proxy"]["stop_grace_period"]
    assert int(grace.rstrip("s")) >= STOP_BUDGET


def test_compose_env_names_ports_and_volumes(compose: dict[str, Any]) -> None:
    s = compose["services"]
    for name, svc in s.items():
        assert unknown(_svc_env(svc)) == [], name
    for role, var, default in (
        ("api", "GOVRIX_API_PORT", 4001),
        ("proxy", "GOVRIX_PROXY_PORT", 4000),
    ):
        port = int(interpolate(_svc_env(s[role]).get(var, str(default))))
        published = [str(p).rsplit(":", 1)[-1] for p in s[role]["ports"]]
        assert published == [str(port)], role
        assert all(str(p).startswith("127.0.0.1:") for p in s[role]["ports"]), "loopback by default"
    # The API cannot reach a proxy's loopback metrics: it shows none rather than a false "down".
    assert _svc_env(s["api"])["GOVRIX_PROXY_METRICS_PORT"] == "0"
    home = "/var/lib/govrix"  # the image's GOVRIX_HOME
    mounts = dict(v.split(":")[::-1] for v in s["proxy"]["volumes"])
    assert set(mounts) == {home, f"{home}/mitmproxy"}
    assert set(mounts.values()) <= set(compose["volumes"])


def test_compose_inlines_no_secret(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for var, value in _svc_env(svc).items():
            if not SECRET_NAMES.search(var):
                continue
            if var.endswith("DATABASE_URL"):
                password = re.match(r"postgresql://[^:]+:(.*)@", value)
                assert password and _INTERP.fullmatch(password.group(1)), (name, var)
            else:
                assert _INTERP.fullmatch(value), f"{name}: {var} must come from the environment"


def test_compose_settings_parse_as_the_proxy_reads_them(compose: dict[str, Any]) -> None:
    env = {k: interpolate(v) for k, v in _svc_env(compose["services"]["proxy"]).items()}
    _proxy_settings(env)
    assert plan.workers(env) == 2


# -- deploy/kubernetes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files, "every manifest is in the kustomization, and only those"
    docs: list[dict[str, Any]] = []
    for name in kust["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def _config(docs: list[dict[str, Any]]) -> dict[str, str]:
    return dict(_one(docs, "ConfigMap", "govrix-config")["data"])


def _container_env(docs: list[dict[str, Any]], c: dict[str, Any]) -> dict[str, str]:
    """What the container sees: its ConfigMaps, then ``env`` (secrets as placeholders)."""
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        assert src["configMapRef"]["name"] == "govrix-config"
        env.update(_config(docs))
    for e in c.get("env", []):
        env[e["name"]] = e.get("value", PLACEHOLDER)
    return env


def test_kustomize_builds(k8s: list[dict[str, Any]]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in k8s
    )


def test_k8s_objects_and_roles(k8s: list[dict[str, Any]]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in k8s}
    assert {
        ("Deployment", "govrix-proxy"),
        ("Deployment", "govrix-api"),
        ("Service", "govrix-proxy"),
        ("Service", "govrix-api"),
        ("Service", "govrix-postgres"),
        ("Job", "govrix-migrate"),
        ("ConfigMap", "govrix-config"),
        ("PodDisruptionBudget", "govrix-proxy"),
    } <= kinds
    assert not [d for d in k8s if d["kind"] == "Secret"], "Secrets are created, never committed"
    assert _one(k8s, "Service", "govrix-postgres")["spec"]["type"] == "ExternalName"
    for kind, name, role in (
        ("Deployment", "govrix-proxy", "proxy"),
        ("Deployment", "govrix-api", "api"),
        ("Job", "govrix-migrate", "migrate"),
    ):
        (c,) = _containers(_one(k8s, kind, name))
        assert c["image"] == "govrix-scout"  # set by the kustomization's `images`
        assert "command" not in c, "the image's ENTRYPOINT runs the role"
        assert container.parser().parse_args(c["args"]).cmd == role
        assert unknown(_container_env(k8s, c)) == [], name
        requests = c["resources"]["requests"]
        assert {"cpu", "memory"} <= set(requests), name


def test_k8s_secrets_come_from_secret_refs(k8s: list[dict[str, Any]]) -> None:
    config = _config(k8s)
    assert not [k for k in config if SECRET_NAMES.search(k)], "no secret in the ConfigMap"
    needed = {
        "govrix-proxy": {"GOVRIX_DATABASE_URL", "GOVRIX_IDENTITY_SECRET"},
        "govrix-api": {"GOVRIX_DATABASE_URL", "GOVRIX_API_KEY"},
        "govrix-migrate": {"GOVRIX_DATABASE_URL"},
    }
    for d in k8s:
        if d["kind"] not in ("Deployment", "Job"):
            continue
        refs = set()
        for c in _containers(d):
            for e in c.get("env", []):
                if SECRET_NAMES.search(e["name"]):
                    assert "value" not in e, f"{e['name']} is inlined"
                    assert e["valueFrom"]["secretKeyRef"]["name"] == "govrix"
                    refs.add(e["name"])
        assert needed[d["metadata"]["name"]] <= refs


def _port_of(c: dict[str, Any], ref: int | str) -> int:
    if isinstance(ref, int):
        return ref
    (port,) = [p["containerPort"] for p in c["ports"] if p["name"] == ref]
    return int(port)


def test_k8s_ports_agree_between_settings_services_and_probes(k8s: list[dict[str, Any]]) -> None:
    config = _config(k8s)
    health_routes = set(re.findall(r'@get\("(/\w+)"', (ROOT / "api" / "health.py").read_text()))
    assert health_routes == {"/health", "/ready"}
    for name, var in (("govrix-proxy", "GOVRIX_PROXY_PORT"), ("govrix-api", "GOVRIX_API_PORT")):
        dep = _one(k8s, "Deployment", name)
        (c,) = _containers(dep)
        env = _container_env(k8s, c)
        port = int(env[var])
        assert [p["containerPort"] for p in c["ports"]] == [port], name
        svc = _one(k8s, "Service", name)
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items()
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        others = [
            d
            for d in k8s
            if d["kind"] == "Deployment"
            and d is not dep
            and svc["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert not others, f"{name}'s Service selects other pods too"
        (sp,) = svc["spec"]["ports"]
        assert sp["port"] == port and _port_of(c, sp["targetPort"]) == port
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c[kind]
            if "httpGet" in probe:
                assert _port_of(c, probe["httpGet"]["port"]) == port
                assert probe["httpGet"]["path"] in health_routes
            elif "tcpSocket" in probe:
                assert _port_of(c, probe["tcpSocket"]["port"]) == port
            else:
                cmd = probe["exec"]["command"]
                assert cmd[:3] == ["python", "-m", "scripts.container"]
                parsed = container.parser().parse_args(cmd[3:])
                assert parsed.cmd in ("health", "ready") and parsed.role == c["args"][0]
    api_env = _container_env(k8s, _containers(_one(k8s, "Deployment", "govrix-api"))[0])
    assert api_env["GOVRIX_PROXY_METRICS_PORT"] == "0"
    assert config["GOVRIX_PROXY_WORKERS"] == "1"


def test_k8s_ca_secret_mounted_where_mitmproxy_reads_it(k8s: list[dict[str, Any]]) -> None:
    dep = _one(k8s, "Deployment", "govrix-proxy")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    env = _container_env(k8s, c)
    ca_volume = next(v for v in spec["volumes"] if "secret" in v)
    assert ca_volume["secret"]["secretName"] == "govrix-ca"
    assert {i["key"] for i in ca_volume["secret"]["items"]} == set(container.CA_FILES)
    mount = next(m for m in c["volumeMounts"] if m["name"] == ca_volume["name"])
    assert Path(mount["mountPath"]) == container.confdir(env)
    assert mount["readOnly"] is True
    # Group-readable for the pod's fsGroup; the user matches the image's.
    assert ca_volume["secret"]["defaultMode"] == 0o440
    uid = next(a for i, a in dockerfile() if i == "USER").split(":")[0]
    assert spec["securityContext"]["runAsUser"] == int(uid) == spec["securityContext"]["fsGroup"]
    home = next(m for m in c["volumeMounts"] if m["mountPath"] == env["GOVRIX_HOME"])
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == home["name"])


def test_k8s_pdb_grace_and_proxy_settings(k8s: list[dict[str, Any]]) -> None:
    dep = _one(k8s, "Deployment", "govrix-proxy")
    pdb = _one(k8s, "PodDisruptionBudget", "govrix-proxy")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < dep["spec"]["replicas"]
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= STOP_BUDGET
    (c,) = _containers(dep)
    _proxy_settings(_container_env(k8s, c))


def _proxy_settings(env: dict[str, str]) -> None:
    """The proxy's own parser accepts these settings (addon/config.py raises on a bad one)."""
    from addon import config

    settings = config.load(env)
    assert settings.metrics_port == int(env.get("GOVRIX_PROXY_METRICS_PORT", "4002"))


# -- the entry point -----------------------------------------------------------------------------


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "mitmproxy").mkdir(exist_ok=True)
    return {
        "GOVRIX_HOME": str(tmp_path),
        "GOVRIX_DATABASE_URL": "postgresql://u:p@db:5432/govrix",
        "GOVRIX_PROXY_HOST": "0.0.0.0",
        "GOVRIX_API_HOST": "0.0.0.0",
        **extra,
    }


def test_children_are_the_commands_up_runs(tmp_path: Path) -> None:
    # GOVRIX_HOME as this process was started with: plan.py reads it once, at import, as does
    # a container's entry point (its environment is the process's).
    env = _env(tmp_path, GOVRIX_IDENTITY_SECRET="s", GOVRIX_PROXY_WORKERS="2")
    env["GOVRIX_HOME"] = str(pidfiles.HOME)
    kids = container.children("proxy", env)
    args = type("A", (), {"no_api": True, "no_proxy": False, "proxy_host": "0.0.0.0"})()
    assert [(k.name, k.cmd) for k in kids] == plan.children(args, env)  # type: ignore[arg-type]
    assert kids[0].cmd[1:3] == ["-m", "addon.lean"]
    assert kids[0].cmd[kids[0].cmd.index("--listen-host") + 1] == "0.0.0.0"
    assert f"confdir={container.confdir(env)}" in kids[0].cmd
    assert kids[1].env["GOVRIX_PROXY_WORKER"] == "2"
    assert kids[1].env["GOVRIX_PROXY_REUSE_PORT"] == "1"
    assert kids[1].env["GOVRIX_PROXY_METRICS_PORT"] == str(plan.worker_metrics_port(2, env))

    (api,) = container.children("api", _env(tmp_path, GOVRIX_API_KEY="k"))
    assert api.cmd[1:] == ["-m", "api", "--host", "0.0.0.0", "--port", str(plan.API_PORT)]


@pytest.mark.parametrize(
    ("role", "extra", "missing"),
    [
        ("api", {}, "GOVRIX_API_KEY"),
        ("proxy", {}, "GOVRIX_IDENTITY_SECRET"),
    ],
)
def test_children_refuse_without_their_secret(
    tmp_path: Path, role: str, extra: dict[str, str], missing: str
) -> None:
    with pytest.raises(container.ContainerError, match=missing):
        container.children(role, _env(tmp_path, **extra))


def test_main_refuses_without_database_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert container.main(["migrate"], env={}) == 2
    assert "GOVRIX_DATABASE_URL is not set" in capsys.readouterr().err
    assert container.main(["proxy"], env={"GOVRIX_IDENTITY_SECRET": "s"}) == 2


@pytest.mark.parametrize(
    ("files", "writable", "problem"),
    [
        ((), True, None),  # compose: mitmproxy creates the CA in its volume
        ((), False, "holds no mitmproxy-ca.pem"),
        (("mitmproxy-ca.pem",), False, "mitmproxy-dhparam.pem"),
        (("mitmproxy-ca.pem",), True, None),
        (container.CA_FILES, False, None),  # the Kubernetes Secret
    ],
)
def test_check_ca(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: tuple[str, ...],
    writable: bool,
    problem: str | None,
) -> None:
    for f in files:
        (tmp_path / f).write_text("x")
    monkeypatch.setattr(container.os, "access", lambda _p, _m: writable)
    got = container.check_ca(tmp_path)
    assert (got is None) if problem is None else (problem in (got or ""))


def test_make_ca_writes_what_the_secret_needs_and_never_replaces(tmp_path: Path) -> None:
    files = container.make_ca(tmp_path / "ca", key_size=1024)
    assert [f.name for f in files] == list(container.CA_FILES)
    assert all(f.stat().st_size > 0 for f in files)
    assert b"PRIVATE KEY" in files[0].read_bytes() and b"PRIVATE KEY" not in files[1].read_bytes()
    assert container.check_ca(tmp_path / "ca") is None
    with pytest.raises(container.ContainerError, match="not replacing"):
        container.make_ca(tmp_path / "ca")


def test_pending_migrations() -> None:
    applied = {m.name: m.checksum for m in migrate.discover()}
    assert container.pending(applied) == []
    last = max(applied)
    assert container.pending({**applied, last: "0" * 64}) == [last]
    assert container.pending({}) == sorted(applied)


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_supervisor_exits_with_a_child_and_stops_the_rest(tmp_path: Path) -> None:
    kids = [
        container.Child("sleeper", _py("import time; time.sleep(30)"), dict(os.environ)),
        container.Child(
            "quitter", _py("import time, sys; time.sleep(0.2); sys.exit(3)"), dict(os.environ)
        ),
    ]
    sup = container.Supervisor(kids, cwd=tmp_path)
    pids: list[int] = []
    real_reap = sup._reap

    def reap() -> list[tuple[str, int]]:
        pids.extend(p for p in sup.procs if p not in pids)
        return real_reap()

    sup._reap = reap  # type: ignore[method-assign]
    assert sup.run(poll=0.02) == 3
    assert len(pids) == 2 and all(_gone(p) for p in pids)
    assert not sup.procs


def test_supervisor_stops_children_on_sigterm(tmp_path: Path) -> None:
    kids = [
        container.Child(f"w{i}", _py("import time; time.sleep(30)"), dict(os.environ))
        for i in (1, 2)
    ]
    sup = container.Supervisor(kids, cwd=tmp_path)

    # A handler of our own around it: a SIGTERM that came late could never stop pytest.
    def ours(*_: object) -> None:
        pass

    before = signal.signal(signal.SIGTERM, ours)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        t0 = time.monotonic()
        assert sup.run(poll=0.02) == 0
        assert time.monotonic() - t0 < LEADER_GRACE
        assert not sup.procs
        assert signal.getsignal(signal.SIGTERM) is ours  # run() put back what it found
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, before)


@pytest.fixture
def http_port() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_probe_api(http_port: int) -> None:
    env = {"GOVRIX_API_HOST": "0.0.0.0", "GOVRIX_API_PORT": str(http_port)}
    assert container.probe("api", "health", env) is None
    assert "503" in (container.probe("api", "ready", env) or "")


def test_probe_proxy(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        env = {
            "GOVRIX_HOME": str(tmp_path),
            "GOVRIX_PROXY_HOST": "0.0.0.0",
            "GOVRIX_PROXY_PORT": str(listener.getsockname()[1]),
            "GOVRIX_PROXY_WORKERS": "1",
            "GOVRIX_PROXY_METRICS_PORT": "0",
        }
        assert "proxy.pid missing" in (container.probe("proxy", "health", env) or "")
        (tmp_path / "proxy.pid").write_text(f"{os.getpid()}\n")
        assert container.probe("proxy", "health", env) is None
        assert container.probe("proxy", "ready", env) is None
        env["GOVRIX_PROXY_WORKERS"] = "2"
        assert "proxy-2.pid missing" in (container.probe("proxy", "health", env) or "")
    env["GOVRIX_PROXY_WORKERS"] = "1"
    assert "does not accept" in (container.probe("proxy", "health", env) or "")


def test_health_without_a_role_reads_the_role_file(tmp_path: Path) -> None:
    env = {"GOVRIX_HOME": str(tmp_path)}
    assert container.main(["health"], env=env) == 1  # no role started
    (tmp_path / "container.role").write_text("api\n")
    env["GOVRIX_API_PORT"] = "1"  # nothing listens there
    assert container.main(["health"], env=env) == 1


# -- Citus ---------------------------------------------------------------------------------------


def _tables_in_migrations() -> set[str]:
    text = "\n".join(p.read_text() for p in sorted((ROOT / "sql").glob("*.sql")))
    # Lower-case names only: skips the day partitions' `CREATE TABLE IF NOT EXISTS %I PARTITION`.
    names = set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?([a-z_][a-z0-9_]*)\b", text))
    return names | {"govrix_migrations"}  # made by scripts/migrate.py


def test_citus_layout_places_every_table() -> None:
    tables = _tables_in_migrations()
    assert {"events", "sessions", "agents"} <= tables
    missing = tables - set(citus_check.LAYOUT)
    assert not missing, f"tables without a Citus placement (scripts/citus_check.py): {missing}"


def test_citus_key_changes_hold_the_distribution_column() -> None:
    for table, statements in citus_check.KEY_CHANGES.items():
        column = citus_check.LAYOUT[table].column
        (pk,) = [s for s in statements if "ADD PRIMARY KEY" in s]
        cols = [c.strip().strip('"') for c in pk.split("(", 1)[1].rstrip(")").split(",")]
        assert column in cols and "timestamp" in cols  # the partition key stays in it too
    assert citus_check.LAYOUT["sessions"].colocate_with == "events"


def test_citus_layout_problems() -> None:
    tables = ["events", "sessions", "agents"]
    layout = {t: citus_check.LAYOUT[t] for t in tables}
    before = [("events", "events_pkey", ["id", "timestamp"], False)]
    after = [("events", "events_pkey", ["id", "timestamp", "session_id"], False)]
    assert citus_check.layout_problems(tables, after, [], [("agents", "t")], layout) == []
    [p] = citus_check.layout_problems(tables, before, [], [], layout)
    assert "lacks the distribution column session_id" in p
    [p] = citus_check.layout_problems(tables, after, [], [("events", "t")], layout)
    assert "trigger t" in p
    [p] = citus_check.layout_problems(
        tables, after, [("agents", "fk", "events", ["id"])], [], layout
    )
    assert "from a local to a distributed table" in p
    [p] = citus_check.layout_problems([*tables, "new_table"], after, [], [], layout)
    assert "new_table has no Citus placement" in p


def test_citus_classify_plans() -> None:
    router = "Custom Scan (Citus Adaptive)  (cost=0.00..0.00 rows=0 width=0)\n  Task Count: 1\n  Tasks Shown: All"
    fan = "Limit\n  ->  Custom Scan (Citus Adaptive)\n        Task Count: 4\n        Tasks Shown: One of 4"
    assert citus_check.classify(router) == ("router", [1])
    assert citus_check.classify(fan) == ("multi-shard", [4])
    assert citus_check.classify("Index Scan using agents_pkey on agents") == ("local", [])


def test_citus_check_without_a_database(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOVRIX_DATABASE_URL", raising=False)
    assert citus_check.main([]) == 2
    assert "GOVRIX_DATABASE_URL" in capsys.readouterr().err


# -- the README ----------------------------------------------------------------------------------


def test_readme_points_here_and_keeps_the_two_command_quickstart() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Deploying beyond one host", 1)[1].split("\n## ", 1)[0]
    for name in ("Dockerfile", "compose.yaml", "deploy/kubernetes/", "docs/deploy.md"):
        assert name in section
    quick = readme.split("## Quickstart", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in quick.strip().splitlines()] == [
        "scripts/govrix up",
        "scripts/govrix test",
    ]
    assert "not been built" in (ROOT / "docs" / "deploy.md").read_text()
