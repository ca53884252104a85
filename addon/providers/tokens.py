"""Upper bounds of what a request can cost in tokens, for budget reservations (DESIGN.md §4).

A budget can only promise "at most one call of overshoot" if every in-flight call is reserved at
no less than what it can really cost. Estimates (``estimate_tokens``: four characters a token)
are fine for an event's estimate and wrong for a reservation: Chinese, Japanese and Korean text
costs about a token a *character* (1.6x the estimate was measured), emoji up to three, and an
agent controls every byte it sends (``"a1a1a1…"`` is one token per character in cl100k).

**Prompt.** Every tokenizer the providers use (byte-level BPE: OpenAI's cl100k/o200k, Llama 3,
Claude; SentencePiece with byte fallback: Gemini/Gemma, Llama 2, Mistral) splits a text into
tokens of at least one UTF-8 byte each, plus at most one inserted word-boundary marker per
separately encoded piece. The JSON body holds every text the provider tokenizes (messages,
system prompt, tool definitions, names), each string written with two quotes and escapes that
only lengthen it, and the chat template's tokens (role markers, 3 to 5 per message) are fewer
than the bytes of the JSON that opens each message (``{"role":"user","content":""}``, 28 bytes).
So ``len(body)`` bounds the text and template tokens of any of these tokenizers.

Nothing tighter holds per character class: checked against cl100k and o200k (the counts were
made offline with the real vocabularies, ``tests/data/token_counts.json``; ``tests/test_tokens.py``
checks the bound on all 111 samples), ``"a1a1…"`` is exactly one token per byte, rare CJK
ideographs 2.98 per character (3 bytes), Extension B ideographs 3.98 (4 bytes), emoji up to 2.7
per character in cl100k. The price is looseness on natural text: text bytes over real tokens are
5.4 for English prose, 4.1 for code, 2.7 (cl100k) to 4.2 (o200k) for Chinese, 1.4 to 2.1 for
emoji. Budgets make up for it by admitting while anything is left and by waiting for in-flight
calls to settle (``addon/budgets/``), not by guessing lower.

What the body does not hold is added, or not bounded:

- ``TOOLS_PREAMBLE_TOKENS`` when the request declares tools: providers add a hidden tool-use
  system prompt (Anthropic documents up to ~350 tokens, plus ~735 for the computer-use tool).
- ``MEDIA_PART_TOKENS`` per image, audio, document or file part: media is priced by pixels or
  pages, not bytes; the largest documented count is gpt-4o-mini's image billing (2,833 + 5,667
  per tile, 8 tiles at most: 48,169). Inline media also counts its base64 bytes (over-reserved,
  never under).
- Not bounded: state held by the provider and referenced by id (Responses ``previous_response_id``
  or ``conversation``, Gemini ``cachedContent``, uploaded files beyond the per-part allowance).

**Completion.** ``max_tokens`` (``max_completion_tokens``, ``max_output_tokens``,
``maxOutputTokens``, ``num_predict``, ``maxTokens``) times the number of choices asked for
(``n``, ``candidateCount``); reasoning is included in it by every provider. ``None`` when the
request sets no limit: the caller then uses its configured allowance, which is *not* a bound.
"""

from __future__ import annotations

#: Hidden tool-use system prompt of a request that declares tools (Anthropic's computer-use tool,
#: the largest documented: ~500 + 735 tokens).
TOOLS_PREAMBLE_TOKENS = 1_300
#: One image/audio/document/file part (gpt-4o-mini's image billing: 2,833 + 8 x 5,667 = 48,169).
MEDIA_PART_TOKENS = 50_000


def prompt_token_bound(body_bytes: int, *, tools: bool = False, media_parts: int = 0) -> int:
    """Upper bound of a request's prompt tokens from its JSON body's length (module docstring)."""
    return (
        max(body_bytes, 0)
        + (TOOLS_PREAMBLE_TOKENS if tools else 0)
        + max(media_parts, 0) * MEDIA_PART_TOKENS
    )


def completion_token_bound(max_tokens: int | None, choices: int | None = None) -> int | None:
    """Upper bound of the completion tokens, or None when the request sets no limit."""
    if max_tokens is None:
        return None
    return max(max_tokens, 0) * max(choices or 1, 1)
