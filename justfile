# Govrix Scout tasks. Run through `scripts/govrix <recipe>` (bootstraps Python, uv and the venv),
# or with `just` directly once `.venv` exists.

set positional-arguments
set shell := ["bash", "-uc"]

py := ".venv/bin/python"

# List the recipes.
default:
    @just --list

# Start the whole stack in the foreground (Ctrl-C stops it): PostgreSQL, migrations, API, proxy.
up *args:
    {{py}} -m scripts.stack up "$@"

# Stop the embedded PostgreSQL (and anything `up` left running).
down:
    {{py}} -m scripts.stack down

# Where everything is and whether it runs.
status:
    {{py}} -m scripts.stack status

# Apply pending SQL migrations to GOVRIX_DATABASE_URL (or the embedded cluster).
migrate *args:
    {{py}} -m scripts.migrate "$@"

# The embedded PostgreSQL alone: `pg start`, `pg stop`, `pg status`, `pg url`.
pg what="status":
    {{py}} -m scripts.pgembed {{what}}

# Re-ingest flows captured with `mitmdump -w FILE`: events recorded with their own timestamps.
replay +files:
    {{py}} -m scripts.replay "$@"

# Scoring API keys: `apikey create --customer acme --tier pro`, `apikey list`, `apikey revoke ID`.
apikey +args:
    {{py}} -m scripts.apikey "$@"

# Lint, type-check, then the whole test suite against a real PostgreSQL.
test *args: lint
    {{py}} -m pytest "$@"

# The README's console screenshots (docs/screenshots/*.png, 1280x800) from the browser tests.
screenshots:
    GOVRIX_SCREENSHOTS=1 {{py}} -m pytest -q tests/test_browser.py

# ruff + mypy --strict on addon/ and api/.
lint:
    .venv/bin/ruff check addon api scripts tests
    .venv/bin/mypy

# Benchmarks (not tests): `bench writer`, `bench proxy`, `bench api`, `bench pii`, `bench engine`,
# `bench injecagent` (the risk scorer on ../shared/eval/injecagent/), `bench lean` (the lean master),
# `bench attacks` (AgentDojo + InjecAgent replayed through the real proxy; needs its own venv),
# `bench streams` (concurrent SSE streams), `bench proxy --peer litellm` (LiteLLM, own venv).
bench what *args:
    {{py}} -m scripts.bench_{{what}} "${@:2}"
