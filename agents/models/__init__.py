"""The model layer: ``provider:model`` specs bound to roles, typed output, retries, cache, traces.

Agents use :class:`ModelLayer` only::

    layer = ModelLayer(ModelConfig.from_args(["all=openai:gpt-4o"]), store, run_id=run_id)
    layer.check_credentials()  # before any work: names the missing variable
    result = await layer.call(role="describer", schema=Description, messages=msgs, prompt=tpl)
    if result.ok: use(result.value)
"""

from agents.models.base import (
    GenerationParams,
    ImageInput,
    Message,
    Provider,
    ProviderError,
    ProviderResponse,
)
from agents.models.credentials import MissingCredentialsError
from agents.models.images import ImageError, prepare_image
from agents.models.layer import ModelLayer
from agents.models.result import CallResult, Status
from agents.models.settings import (
    DEFAULT_SPEC,
    ModelConfig,
    RoleBinding,
    RoleSettings,
    default_config,
)
from agents.models.spec import ModelSpec, parse_spec

__all__ = [
    "DEFAULT_SPEC",
    "CallResult",
    "GenerationParams",
    "ImageError",
    "ImageInput",
    "Message",
    "MissingCredentialsError",
    "ModelConfig",
    "ModelLayer",
    "ModelSpec",
    "Provider",
    "ProviderError",
    "ProviderResponse",
    "RoleBinding",
    "RoleSettings",
    "Status",
    "default_config",
    "parse_spec",
    "prepare_image",
]
