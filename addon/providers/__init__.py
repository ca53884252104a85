"""Provider layer: which LLM API a request speaks, and what its bodies say.

``detect(host, path)`` picks the provider and endpoint; the provider then parses the request, the
buffered response or the stream (see ``base`` for the records and the usage conventions). Pure
code: no mitmproxy, no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from .anthropic import Anthropic
from .azure import AzureOpenAI, is_azure_host
from .base import (
    Provider,
    RequestInfo,
    ResponseInfo,
    StreamParser,
    ToolCall,
    Usage,
    fill_prompt_estimate,
    request_error,
    response_error,
)
from .bedrock import Bedrock, is_bedrock_host
from .gemini import Gemini
from .ollama import Ollama
from .openai import COMPATIBLE_HOSTS, OpenAICompatible
from .other import OTHER

__all__ = [
    "OPENAI_COMPATIBLE_NAME",
    "OTHER",
    "PROVIDERS",
    "Provider",
    "RequestInfo",
    "ResponseInfo",
    "StreamParser",
    "ToolCall",
    "Usage",
    "detect",
    "detect_as",
    "fill_prompt_estimate",
    "get_provider",
    "parse_request",
    "parse_response",
    "provider_by_name",
]

#: Provider name for hosts configured as OpenAI-compatible without a name of their own.
OPENAI_COMPATIBLE_NAME = "openai-compatible"

ANTHROPIC = Anthropic()
AZURE = AzureOpenAI()
BEDROCK = Bedrock()
GEMINI = Gemini()
VERTEX = Gemini("vertex", vertex=True)
OLLAMA = Ollama()

_COMPATIBLE: dict[str, OpenAICompatible] = {
    name: OpenAICompatible(name, hosts, supports_stream_options=opts)
    for name, (hosts, opts) in COMPATIBLE_HOSTS.items()
}

#: Every built-in provider by name.
PROVIDERS: dict[str, Provider] = {
    **_COMPATIBLE,
    ANTHROPIC.name: ANTHROPIC,
    AZURE.name: AZURE,
    BEDROCK.name: BEDROCK,
    GEMINI.name: GEMINI,
    VERTEX.name: VERTEX,
    OLLAMA.name: OLLAMA,
}

# Exact host -> provider, the common case: one dict lookup.
_BY_HOST: dict[str, Provider] = {
    "api.anthropic.com": ANTHROPIC,
    "generativelanguage.googleapis.com": GEMINI,
    "aiplatform.googleapis.com": VERTEX,
}
for _provider in _COMPATIBLE.values():
    for _host in _provider.hosts:
        _BY_HOST[_host] = _provider

# Providers made on the fly for configured hosts, by name (a handful; never per request).
_EXTRA: dict[str, OpenAICompatible] = {}


def get_provider(name: str) -> Provider | None:
    """A built-in provider by name (or a configured OpenAI-compatible one already seen)."""
    return PROVIDERS.get(name) or _EXTRA.get(name)


def provider_by_name(name: str) -> Provider:
    """The provider ``detect`` returned under this name (an unknown name: OpenAI-compatible;
    ``other``: a host recorded as metadata only)."""
    if name == OTHER.name:
        return OTHER
    return get_provider(name) or _extra_provider(name)


def _extra_provider(name: str) -> OpenAICompatible:
    provider = _EXTRA.get(name)
    if provider is None:
        # Accepts any host: detect() only routes configured hosts here.
        provider = _EXTRA[name] = _AnyHostCompatible(name)
    return provider


class _AnyHostCompatible(OpenAICompatible):
    """OpenAI-compatible provider for configured hosts; the host check is done by ``detect``."""

    def match(self, host: str, path: str) -> str | None:
        """Endpoint by path suffix on whichever host routed here."""
        return self.match_path(path)


def detect_as(provider_name: str, path: str) -> tuple[Provider, str] | None:
    """Provider by name and endpoint by path, whatever the host.

    For traffic the configuration routes to a known provider (``GOVRIX_UPSTREAM_<NAME>``, reverse
    mode, a test double on localhost). An unknown name is taken as OpenAI-compatible.
    """
    provider = get_provider(provider_name) or _extra_provider(provider_name)
    endpoint = provider.match_path(path)
    return (provider, endpoint) if endpoint is not None else None


def _split_port(host: str) -> str:
    if host.startswith("["):  # [v6]:port
        return host[: host.find("]") + 1]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def detect(
    host: str, path: str, extra_openai_hosts: Collection[str] = ()
) -> tuple[Provider, str] | None:
    """The provider and endpoint for a request, or None when it is not an LLM API call we know.

    ``host`` may carry a port. ``extra_openai_hosts`` names more OpenAI-compatible hosts (with or
    without port); given as a mapping host -> provider name, the name is used (e.g. "vllm"),
    otherwise they are reported as ``openai-compatible``. Built-in hosts win over extras. Any other
    host answering ``/api/chat`` or ``/api/generate`` is taken for Ollama.
    """
    host_port = host.lower()
    name = _split_port(host_port)
    provider = _BY_HOST.get(name)
    if provider is None:
        if is_azure_host(name):
            provider = AZURE
        elif is_bedrock_host(name):
            provider = BEDROCK
        elif name.endswith("-aiplatform.googleapis.com"):
            provider = VERTEX
    if provider is not None:
        endpoint = provider.match(name, path)
        return (provider, endpoint) if endpoint is not None else None
    if extra_openai_hosts:
        key = host_port if host_port in extra_openai_hosts else name
        if key in extra_openai_hosts:
            label = OPENAI_COMPATIBLE_NAME
            if isinstance(extra_openai_hosts, Mapping):
                label = str(extra_openai_hosts[key]) or OPENAI_COMPATIBLE_NAME
            extra = _extra_provider(label)
            endpoint = extra.match(name, path)
            if endpoint is not None:
                return extra, endpoint
    endpoint = OLLAMA.match(name, path)
    return (OLLAMA, endpoint) if endpoint is not None else None


def parse_request(provider: Provider, endpoint: str, path: str, body: bytes | None) -> RequestInfo:
    """``provider.parse_request`` that cannot raise, whatever the bytes.

    Every provider catches the decode errors it expects; this is the boundary for the ones it does
    not (a ``UnicodeDecodeError`` from msgspec on a lone non-UTF-8 byte, a bug of ours): the
    request then carries ``parse_error`` and the gates apply their fail mode instead of being
    skipped by an exception.
    """
    if body is None:
        return RequestInfo(
            provider=provider.name, endpoint=endpoint, parse_error="undecodable request body"
        )
    try:
        return provider.parse_request(endpoint, path, body)
    except Exception as e:
        return request_error(provider.name, endpoint, e)


def parse_response(
    provider: Provider, endpoint: str, body: bytes, content_type: str
) -> ResponseInfo:
    """``provider.parse_response`` that cannot raise (see :func:`parse_request`)."""
    try:
        return provider.parse_response(endpoint, body, content_type)
    except Exception as e:
        return response_error(e)
