"""The pure parts of ``scripts/govrix bench streams`` and of the peer table of ``bench proxy``:
statistics, gaps, RSS per stream, arrival schedules, token stamping, options. No process, no
network, no LiteLLM."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from scripts import bench_streams as bs
from scripts.bench_proxy.procs import stack_command
from scripts.bench_proxy.report import per_core, write_section
from scripts.bench_proxy.stats import Cell, p50_p99


@pytest.mark.parametrize(
    ("arrivals", "gap", "want"),
    [
        ([0.0, 0.2, 0.4, 0.6], 0.2, [0.0, 0.0, 0.0]),
        ([0.0, 0.25, 0.45], 0.2, [0.05, 0.0]),  # one late chunk
        ([1.0, 1.2, 1.2, 1.6], 0.2, [0.0, -0.2, 0.2]),  # two arrived together, then a stall
        ([5.0], 0.2, []),
        ([], 0.2, []),
    ],
)
def test_added_gaps(arrivals: list[float], gap: float, want: list[float]) -> None:
    assert bs.added_gaps(arrivals, gap) == pytest.approx(want)


@pytest.mark.parametrize(
    ("idle", "loaded", "open_streams", "want"),
    [
        (100 << 20, (100 << 20) + 200 * 40 * 1024, 200, 40 * 1024),
        (50_000_000, 50_000_000, 10, 0.0),
        (50_000_000, 49_000_000, 10, -100_000.0),  # the heap shrank: reported, not hidden
    ],
)
def test_rss_per_stream(idle: int, loaded: int, open_streams: int, want: float) -> None:
    assert bs.rss_per_stream(idle, loaded, open_streams) == pytest.approx(want)


def test_rss_per_stream_without_open_streams_is_not_a_number() -> None:
    assert math.isnan(bs.rss_per_stream(1, 2, 0))


def test_peak_takes_the_most_open_and_the_later_on_a_tie() -> None:
    samples = [(0, 10, 5), (150, 30, 20), (200, 40, 25), (200, 45, 26), (120, 50, 30)]
    assert bs.peak(samples) == (200, 45, 26)
    assert bs.peak([]) == (0, 0, 0)


def test_schedules() -> None:
    burst = bs.schedule("burst", 200, 40, 8, 1.0)
    assert len(burst) == 200 and burst[0] == 0.0 and burst[-1] < 1.0
    assert burst == sorted(burst)
    steady = bs.schedule("steady", 200, 40, 8, 1.0)
    assert len(steady) == 320
    assert steady[1] - steady[0] == pytest.approx(1 / 40)
    assert steady[-1] == pytest.approx(319 / 40)
    with pytest.raises(ValueError, match="pattern"):
        bs.schedule("sawtooth", 1, 1, 1, 1)


def test_p50_p99() -> None:
    values = [float(v) for v in range(1, 101)]
    p50, p99 = p50_p99(values)
    assert p50 == pytest.approx(50.5)
    assert p99 == pytest.approx(99.01)
    assert p50_p99([3.0]) == (3.0, 3.0)
    assert all(math.isnan(v) for v in p50_p99([]))


def test_median_ignores_missing_values() -> None:
    assert bs.median([1.0, math.nan, 3.0]) == 2.0
    assert math.isnan(bs.median([math.nan]))


def test_every_token_the_upstream_sends_is_found_once_with_its_first_time() -> None:
    chunks = bs.token_chunks(12)
    assert len(chunks) == 13  # 12 tokens, then usage and [DONE]
    arrivals: list[float | None] = [None] * 12
    tail = b""
    for t, chunk in enumerate(chunks):
        # Re-framed as a proxy may do: each upstream chunk cut in two at an awkward place.
        for half in (chunk[: len(chunk) // 2 + 3], chunk[len(chunk) // 2 + 3 :]):
            buf = tail + half
            bs.scan_tokens(buf, arrivals, float(t))
            tail = buf[-8:]
    assert arrivals == [float(k) for k in range(12)]
    bs.scan_tokens(b"data: tok003 tok999", arrivals, 99.0)  # seen before; out of range
    assert arrivals[3] == 3.0


def test_phase_summary_arithmetic() -> None:
    ok = bs.Stream(0.0, ttfb=0.010, arrivals=[0.01, 0.21, 0.42])
    late = bs.Stream(0.0, ttfb=0.030, arrivals=[0.03, 0.23, 0.43])
    failed = bs.Stream(0.0, error="status 502, not a chunked stream")
    phase = bs.Phase(
        [ok, late, failed],
        samples=[(1, 110 << 20, 100 << 20), (2, (110 << 20) + 2 * 40960, (100 << 20) + 20480)],
        cpu_s=0.3,
        wall_s=1.5,
    )
    res = phase.summary(0.2, 110 << 20, 100 << 20)
    assert res["ttfb_p50_ms"] == pytest.approx(20.0)
    assert res["gap_p50_ms"] == pytest.approx(0.0, abs=1e-9)  # gaps: 0, +10 ms, 0, 0
    assert res["gap_p99_ms"] == pytest.approx(9.7)
    assert res["cpu_ms_per_stream"] == pytest.approx(100.0)
    assert res["cores"] == pytest.approx(0.2)
    assert res["peak_open"] == 2
    assert res["rss_kb_per_stream"] == pytest.approx(40.0)
    assert res["main_kb_per_stream"] == pytest.approx(10.0)
    assert res["errors"] == 1 and res["streams"] == 3


def test_pooled_takes_the_median_of_each_metric_over_rounds() -> None:
    rounds = [{"ttfb_p99_ms": 10.0}, {"ttfb_p99_ms": 30.0}, {"ttfb_p99_ms": 14.0}]
    assert bs.pooled({"Govrix": {"steady": rounds}}) == {
        "Govrix": {"steady": {"ttfb_p99_ms": 14.0}}
    }


def test_defaults_and_flags() -> None:
    args = bs.parse_args([])
    assert (args.streams, args.rate, args.rounds, args.chunks, args.gap_ms) == (200, 40, 2, 15, 200)
    args = bs.parse_args(["--streams", "20", "--rate", "5", "--rounds", "1", "--no-litellm"])
    assert (args.streams, args.rate, args.rounds, args.no_litellm) == (20, 5.0, 1, True)


@pytest.mark.parametrize(
    "argv",
    [
        ["--streams", "0"],
        ["--streams", str(bs.MAX_STREAMS + 1)],
        ["--streams", "1.5"],
        ["--rate", "10000"],
        ["--chunks", "1000"],  # tokens are three digits
        ["--steady-seconds", "3600"],
    ],
)
def test_unbounded_runs_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        bs.parse_args(argv)


def test_govrix_runs_with_the_stacks_command_line_moved_to_its_own_port() -> None:
    cmd = stack_command(54321, Path("/tmp/x/mitmproxy"))
    assert cmd[1:3] == ["-m", "addon.lean"]
    assert cmd[cmd.index("--listen-port") + 1] == "54321"
    assert "confdir=/tmp/x/mitmproxy" in cmd
    assert "-s" not in cmd and not any("stream_large_bodies" in a for a in cmd)


def test_per_core_is_one_over_cpu_per_request() -> None:
    govrix = Cell(500.0, 1.0, 2.0, 2000, 2000, 0, proxy_cpu_us=1400.0, recorder_cpu_us=200.0)
    assert per_core(govrix) == pytest.approx(625.0)
    peer = Cell(90.0, 1.0, 2.0, 360, 360, 0, proxy_cpu_us=10_000.0, recorder_cpu_us=0.0)
    assert per_core(peer) == pytest.approx(100.0)
    assert math.isnan(per_core(Cell(0.0, math.nan, math.nan, 0, 0, 0)))


def test_write_section_replaces_only_its_own(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Proxy (`x`)\n\nkeep me\n\n## Streams (`old`)\n\nold\n")
    write_section("## Streams (`new`)\n\nnew numbers\n", path, heading=bs.HEADING)
    text = path.read_text()
    assert "keep me" in text and "new numbers" in text and "old" not in text
    write_section("## Peer: LiteLLM (`y`)\n\npeer\n", path, heading="## Peer: LiteLLM")
    assert path.read_text().endswith("## Peer: LiteLLM (`y`)\n\npeer\n")
    assert "new numbers" in path.read_text()
