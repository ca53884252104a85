"""Make ``token_counts.json``: sample prompts with their real token counts (cl100k and o200k).

The budget bound (``addon/providers/tokens.py``) is checked against these counts offline, without
a tokenizer in the project's dependencies. Run with an interpreter that has ``rs-bpe`` (its
wheel embeds both vocabularies; no download at run time)::

    python -m venv /tmp/tok && /tmp/tok/bin/pip install rs-bpe
    /tmp/tok/bin/python tests/data/make_token_counts.py

Samples are generated from a fixed seed: natural English, Chinese, Japanese and Korean, emoji
(modifiers, ZWJ sequences, flags), code, and adversarial strings (one token per character,
rare CJK ideographs, random code points of every plane).
"""

# ruff: noqa: RUF001  (CJK punctuation is the point of these samples)
from __future__ import annotations

import json
import random
from pathlib import Path

from rs_bpe.bpe import openai  # type: ignore[import-not-found]

OUT = Path(__file__).with_name("token_counts.json")

ENGLISH = (
    "The quarterly report shows that revenue grew by twelve percent, driven mostly by the new "
    "subscription tier. Operating costs stayed flat, although the support team hired two more "
    "engineers to handle the backlog. Please summarise the main risks for the board, and list "
    "three questions they are likely to ask about customer churn in the next meeting. "
)
CHINESE = (
    "今天的天气很好，我们决定去公园散步。公园里有很多人在跑步、打太极拳和放风筝。"
    "请帮我总结这份季度报告的主要风险，并列出董事会可能会问的三个关于客户流失的问题。"
    "人工智能代理在处理财务数据时必须遵守公司的合规政策，所有请求都需要记录。"
)
JAPANESE = (
    "今日はとても良い天気なので、公園を散歩することにしました。"
    "四半期報告書の主なリスクを要約し、取締役会が顧客離れについて尋ねそうな質問を三つ挙げてください。"
    "エージェントが送信するすべてのリクエストは監査ログに記録されます。"
)
KOREAN = (
    "오늘은 날씨가 좋아서 공원에 산책하러 가기로 했습니다. "
    "분기 보고서의 주요 위험을 요약하고 이사회가 고객 이탈에 대해 물어볼 만한 질문 세 가지를 나열해 주세요. "
    "에이전트가 보내는 모든 요청은 감사 로그에 기록됩니다. "
)
CODE = '''def reserve(self, agent_id: str, cost: Cost) -> Reservation | Denial:
    """Admit and reserve, or say which budget refuses."""
    for spec in self._global + self._by_agent.get(agent_id, []):
        if spent + reserved >= spec.limit_units:
            return Denial(spec, "reserved", ...)
    return Reservation(tuple(keys), cost.tokens, cost.usd_micros or 0)
'''
JSON_DOC = json.dumps(
    {"users": [{"id": i, "email": f"user{i}@example.com", "tags": ["a", "b"]} for i in range(20)]}
)
MINIFIED_JS = "function f(a,b){return a.map(x=>x*b).filter(Boolean).reduce((s,v)=>s+v,0)};" * 8
EMOJI_BASE = [chr(c) for c in range(0x1F300, 0x1F5FF)] + [chr(c) for c in range(0x1F900, 0x1F9FF)]
SKIN = [chr(c) for c in range(0x1F3FB, 0x1F400)]
ZWJ_FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"
FLAGS = [
    "\U0001f1fa\U0001f1f8",
    "\U0001f1ef\U0001f1f5",
    "\U0001f1e9\U0001f1ea",
    "\U0001f1e8\U0001f1f3",
]


def emoji_text(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            out.append(rng.choice(EMOJI_BASE))
        elif r < 0.75:
            out.append("\U0001f44d" + rng.choice(SKIN))
        elif r < 0.85:
            out.append(ZWJ_FAMILY)
        elif r < 0.95:
            out.append(rng.choice(FLAGS))
        else:
            out.append(" ")
    return "".join(out)


def random_code_points(rng: random.Random, n: int, lo: int, hi: int) -> str:
    out = []
    while len(out) < n:
        c = rng.randint(lo, hi)
        if 0xD800 <= c <= 0xDFFF:
            continue
        out.append(chr(c))
    return "".join(out)


def samples() -> list[tuple[str, str]]:
    rng = random.Random(20_260_305)
    out: list[tuple[str, str]] = []
    for n in (1, 3, 10, 40, 200, 1000):
        out.append((f"english_{n}", (ENGLISH * 8)[:n]))
        out.append((f"chinese_{n}", (CHINESE * 8)[:n]))
        out.append((f"japanese_{n}", (JAPANESE * 8)[:n]))
        out.append((f"korean_{n}", (KOREAN * 8)[:n]))
        out.append((f"emoji_{n}", emoji_text(rng, n)))
        out.append((f"cjk_rare_{n}", random_code_points(rng, n, 0x3400, 0x4DBF)))
        out.append((f"cjk_ext_b_{n}", random_code_points(rng, n, 0x20000, 0x2A6DF)))
        out.append((f"bmp_random_{n}", random_code_points(rng, n, 0x80, 0xFFFD)))
        out.append((f"any_plane_{n}", random_code_points(rng, n, 0x1, 0x10FFFF)))
        out.append((f"ascii_random_{n}", "".join(chr(rng.randint(32, 126)) for _ in range(n))))
        out.append((f"a1_{n}", ("a1" * n)[:n]))
        out.append((f"spaces_{n}", "".join(rng.choice(" \t\n x") for _ in range(n))))
        out.append((f"digits_{n}", "".join(rng.choice("0123456789.,") for _ in range(n))))
        out.append((f"code_{n}", (CODE * 8)[:n]))
        out.append((f"json_{n}", (JSON_DOC * 4)[:n]))
        out.append((f"minified_js_{n}", (MINIFIED_JS * 4)[:n]))
        out.append((f"combining_{n}", ("e\u0301\u0302\u0303" * n)[:n]))
        out.append(
            (f"arabic_devanagari_thai_{n}", ("مرحبا بالعالم नमस्ते दुनिया สวัสดีชาวโลก " * n)[:n])
        )
    # The e2e budget test's prompts: English, Chinese, emoji (tests/test_e2e_budgets.py).
    out.append(("e2e_english", (ENGLISH * 2)[:600]))
    out.append(("e2e_cjk", (CHINESE * 4)[:300]))
    out.append(("e2e_emoji", emoji_text(random.Random(7), 150)))
    return out


def main() -> None:
    cl100k, o200k = openai.cl100k_base(), openai.o200k_base()
    rows = [
        {
            "name": name,
            "text": text,
            "cl100k": len(cl100k.encode(text)),
            "o200k": len(o200k.encode(text)),
        }
        for name, text in samples()
    ]
    OUT.write_text(json.dumps(rows, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"{len(rows)} samples -> {OUT}")


if __name__ == "__main__":
    main()
