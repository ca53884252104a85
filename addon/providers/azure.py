"""Azure OpenAI: the OpenAI dialect on per-resource hosts, with the model named by the deployment.

Paths: ``/openai/deployments/{deployment}/chat/completions?api-version=...`` (also
``/completions``, ``/embeddings``, ``/responses``) and the v1 surface ``/openai/v1/...`` /
``/openai/responses`` where the body names the model.
"""

from __future__ import annotations

from urllib.parse import unquote

from .base import RequestInfo
from .openai import OpenAICompatible, openai_endpoint

_HOST_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")
_DEPLOYMENTS = "/openai/deployments/"


def is_azure_host(host: str) -> bool:
    """True for Azure OpenAI / AI Services resource hosts."""
    return host.endswith(_HOST_SUFFIXES)


def deployment_of(path: str) -> str | None:
    """The deployment name in a deployments path, URL-decoded."""
    path = path.split("?", 1)[0]
    if not path.startswith(_DEPLOYMENTS):
        return None
    name = path[len(_DEPLOYMENTS) :].split("/", 1)[0]
    return unquote(name) or None


class AzureOpenAI(OpenAICompatible):
    """Azure OpenAI."""

    def __init__(self) -> None:
        super().__init__("azure", (), supports_stream_options=True)

    def match(self, host: str, path: str) -> str | None:
        """Endpoint for an ``/openai/...`` path on an Azure resource host."""
        if not is_azure_host(host) or not path.startswith("/openai/"):
            return None
        return openai_endpoint(path)

    def parse_request(self, endpoint: str, path: str, body: bytes) -> RequestInfo:
        """As OpenAI; the model is the body's ``model`` or else the deployment name."""
        info = super().parse_request(endpoint, path, body)
        if info.model is None:
            info.model = deployment_of(path)
        return info
