"""Policy versions through the real proxy: a row inserted in SQL is enforced within a second.

Two mitmdump proxies share one database, as two replicas would: ``plain`` has no policy file,
``gitops`` watches one. A version inserted in SQL is enforced by both; a version that does not
compile leaves the rules in force; an edited file becomes a new row that both apply. The
deadline is measured from the INSERT's commit to the first refused request.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.fakeprovider import FakeProvider, free_port
from tests.proxyharness import Proxy, wait_for

pytestmark = pytest.mark.e2e
URL = "https://api.openai.com/v1/chat/completions"
BAD = "version: 1\nrules:\n  - name: broken\n    when: [{field: nope, op: eq, value: 1}]\n    action: block\n"


def deny(model: str, name: str = "deny-model") -> str:
    return (
        f"version: 1\nrules:\n  - name: {name}\n"
        f"    when: [{{field: model, op: eq, value: {model}}}]\n"
        f"    action: block\n    message: {model} is not allowed\n"
    )


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Running:
    """One proxy, a kept-alive client through it (one TLS handshake), and its metrics port."""

    def __init__(self, proxy: Proxy, metrics_port: int) -> None:
        self.proxy = proxy
        self.metrics_port = metrics_port
        self.http = httpx.Client(
            proxy=f"http://policy-agent:x@127.0.0.1:{proxy.port}",
            verify=proxy.ssl_context(),
            timeout=10,
        )

    def status(self, model: str) -> int:
        r = self.http.post(
            URL, json={"model": model, "messages": [{"role": "user", "content": "hi"}]}
        )
        return r.status_code

    def metric(self, name: str) -> list[str]:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return [line for line in text.splitlines() if line.startswith(name)]


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gitops") / "policy.yaml"
    path.write_text(deny("o1", name="file-rule"))
    return path


def start(dsn: str, home: Path, fake: FakeProvider, env: dict[str, str]) -> Running:
    port = free_port()
    proxy = Proxy(dsn, home, fake, env={"GOVRIX_PROXY_METRICS_PORT": str(port)} | env).start()
    return Running(proxy, port)


@pytest.fixture(scope="module")
def plain(
    module_dsn: str, fake: FakeProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    r = start(module_dsn, tmp_path_factory.mktemp("plain"), fake, {})
    yield r
    r.http.close()
    r.proxy.stop()


def sql(dsn: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def insert(dsn: str, text: str) -> int:
    rows = sql(
        dsn,
        "INSERT INTO policy_versions (who, source, checksum, rule_count, yaml) "
        "VALUES ('e2e', 'api', %s, 1, %s) RETURNING id",
        (sha(text), text),
    )
    return int(rows[0][0])


def refused_within(r: Running, model: str, deadline: float) -> float:
    """Seconds from now until ``model`` is refused with 403; fails past ``deadline``."""
    start = time.monotonic()
    wait_for(lambda: r.status(model) == 403, timeout=deadline, interval=0.01)
    return time.monotonic() - start


def test_sql_version_is_enforced_within_a_second_and_a_bad_one_changes_nothing(
    plain: Running, module_dsn: str
) -> None:
    assert plain.status("gpt-4o") == 200  # no policy anywhere yet
    wait_for(lambda: plain.metric("govrix_policy_sync_live 1.0"))

    good = insert(module_dsn, deny("gpt-4o"))
    took = refused_within(plain, "gpt-4o", deadline=1.0)
    r = plain.http.post(
        URL, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
    )
    assert r.json()["error"] == "policy_blocked" and r.json()["rule"] == "deny-model"
    assert plain.status("gpt-4o-mini") == 200
    assert plain.metric("govrix_policy_version ") == [f"govrix_policy_version {good}.0"]
    print(f"\nSQL insert -> first 403 through the proxy: {took * 1000:.0f} ms")

    bad = insert(module_dsn, BAD)
    wait_for(lambda: plain.metric('govrix_policy_rejected_total{origin="version"} 1.0'), timeout=1)
    assert f"policy version {bad} rejected" in plain.proxy.output()
    assert "unknown field 'nope'" in plain.proxy.output()
    assert plain.status("gpt-4o") == 403  # the previous rules stay in force
    assert plain.metric("govrix_policy_version ") == [f"govrix_policy_version {good}.0"]
    info = plain.metric("govrix_policy_info")
    assert info == [
        f'govrix_policy_info{{checksum="{sha(deny("gpt-4o"))}",origin="version",'
        f'version="{good}"}} 1.0'
    ]


def test_policy_file_becomes_a_version_that_every_proxy_applies(
    plain: Running,
    module_dsn: str,
    fake: FakeProvider,
    policy_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    source = f"file:{policy_file.resolve()}"
    gitops = start(
        module_dsn,
        tmp_path_factory.mktemp("gitops-home"),
        fake,
        {"GOVRIX_POLICY_FILE": str(policy_file)},
    )
    try:
        # At start the file is newer than every version: inserted, then applied by both proxies.
        first = wait_for(
            lambda: sql(
                module_dsn,
                "SELECT id, who, checksum FROM policy_versions WHERE source = %s",
                (source,),
            )
        )
        assert len(first) == 1 and first[0][1].startswith("proxy:")
        assert first[0][2] == sha(policy_file.read_text())
        refused_within(plain, "o1", deadline=1.0)
        refused_within(gitops, "o1", deadline=1.0)
        assert plain.status("gpt-4o") == 200 and gitops.status("gpt-4o") == 200
        wait_for(lambda: gitops.metric(f"govrix_policy_version {first[0][0]}.0"))

        # An edit: a new row from the file, enforced by the proxy without the file too.
        staged = policy_file.with_suffix(".new")
        staged.write_text(deny("gpt-4o-mini", name="file-rule"))
        staged.replace(policy_file)
        took = refused_within(plain, "gpt-4o-mini", deadline=3.0)  # 1 s watch + 1 s NOTIFY
        rows = sql(
            module_dsn,
            "SELECT id, checksum FROM policy_versions WHERE source = %s ORDER BY id",
            (source,),
        )
        assert [r[1] for r in rows] == [first[0][2], sha(policy_file.read_text())]
        assert rows[-1][0] == sql(module_dsn, "SELECT max(id) FROM policy_versions")[0][0]
        refused_within(gitops, "gpt-4o-mini", deadline=1.0)
        assert gitops.status("o1") == 200
        print(f"\nfile edit -> first 403 on the other proxy: {took * 1000:.0f} ms")
    finally:
        gitops.http.close()
        gitops.proxy.stop()
    # One row per text, however many proxies and refreshes saw the file.
    assert len(sql(module_dsn, "SELECT 1 FROM policy_versions WHERE source = %s", (source,))) == 2
