"""Model zoo of architectures used in private-inference papers."""

from pi_opt.models import mobilenet as _mobilenet  # noqa: F401  (registers)
from pi_opt.models import resnet as _resnet  # noqa: F401
from pi_opt.models import vgg as _vgg  # noqa: F401
from pi_opt.models import wrn as _wrn  # noqa: F401
from pi_opt.models._registry import (
    MODELS,
    check_arch,
    create_model,
    describe_model,
    list_models,
    register_model,
)

__all__ = ["MODELS", "check_arch", "create_model", "describe_model", "list_models",
           "register_model"]
