"""Model registry: ``register_model`` names a builder; ``create_model`` and ``list_models`` use it."""
import difflib
import fnmatch
import inspect
import warnings

__all__ = ["register_model", "create_model", "list_models", "model_entrypoint", "model_arguments",
           "tiny_args", "ModelZooError", "UnknownModelError"]

_MODELS = {}


class ModelZooError(ValueError):
    """Bad model name, arguments or input; the message says which and what is wrong."""


class UnknownModelError(ModelZooError, KeyError):
    """Raised for a model name that is not registered; the message lists close matches."""

    def __str__(self):
        return self.args[0]


_TINY_ARGS = {}


def register_model(fn=None, *, tiny=None):
    """Decorator: register ``fn(in_channels, num_classes, **kwargs)`` under its function name.

    ``tiny`` gives the narrow arguments the test-suite and the smoke benchmark build the model
    with (e.g. ``{"base_channels": 8}``), so every registered model is tested cheaply.
    Use as ``@register_model`` or ``@register_model(tiny={...})``.
    """
    def add(builder):
        name = builder.__name__
        if name in _MODELS:
            warnings.warn(f"model '{name}' registered twice; the later definition wins", stacklevel=3)
        _MODELS[name] = builder
        _TINY_ARGS[name] = dict(tiny or {})
        return builder

    return add if fn is None else add(fn)


def tiny_args(name):
    """The narrow keyword arguments registered for ``name`` (see ``register_model``)."""
    model_entrypoint(name)
    return dict(_TINY_ARGS[name])


def list_models(pattern="*"):
    """Sorted names of registered models matching a shell-style ``pattern``."""
    _import_families()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_entrypoint(name):
    """The builder registered as ``name``; an unknown name raises with the closest matches."""
    _import_families()
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise UnknownModelError(f"unknown model {name!r}{hint}; see list_models() for all {len(_MODELS)} names")
    return _MODELS[name]


def create_model(name, in_channels=3, num_classes=2, **kwargs):
    """Build a registered model. Unknown keyword arguments raise a TypeError naming them."""
    builder = model_entrypoint(name)
    accepted = model_arguments(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ModelZooError(f"model {name!r}: unknown argument(s) {', '.join(unknown)}; "
                            f"accepted: {', '.join(sorted(accepted))}")
    for key, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelZooError(f"model {name!r}: {key} must be a positive integer, got {value!r}")
    model = builder(in_channels=in_channels, num_classes=num_classes, **kwargs)
    model.model_name = name
    model.model_args = dict(in_channels=in_channels, num_classes=num_classes, **kwargs)
    return model


def model_arguments(name):
    """The keyword arguments a model's builder accepts, with their defaults."""
    builder = model_entrypoint(name)
    params = inspect.signature(builder).parameters.values()
    return {p.name: p.default for p in params
            if p.name not in ("in_channels", "num_classes") and p.kind is not p.VAR_KEYWORD}


def _import_families():
    # Importing the family modules runs their @register_model decorators.
    from . import families  # noqa: F401
