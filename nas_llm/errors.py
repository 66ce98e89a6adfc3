"""One exception family for everything nas-llm refuses, so the CLI can tell our messages from bugs.

The CLI prints a ``NasLLMError`` (and OS errors such as a full or read-only disk) as one line and
exits 2; anything else is a bug and shows its traceback. Each subclass also derives from the
built-in type callers caught before (``ValueError``...), so existing ``except`` clauses keep working.
"""
from __future__ import annotations


class NasLLMError(Exception):
    """Base of every error nas-llm raises on purpose: the message names the problem and the fix."""


class ConfigError(NasLLMError, ValueError):
    """A bad argument or setting (a value out of range, an unknown name, a missing objective...)."""


class RunFolderError(NasLLMError, FileExistsError):
    """A run folder that is missing, locked by another process, or belongs to a different search."""


class ModelMismatchError(NasLLMError, ValueError):
    """The model found now is not the model a run was searched on."""


class UnsupportedModelError(NasLLMError, NotImplementedError):
    """A model of a family nas-llm has no declaration for (the message lists the supported ones)."""


class ModelFileError(NasLLMError, ValueError):
    """A model file that is truncated or damaged (the message says what was expected and what was found)."""


class ObjectiveValueError(NasLLMError, ValueError):
    """An objective or latency predictor returned an unusable number (NaN, infinite, negative time)."""


class ObjectiveTypeError(NasLLMError, TypeError):
    """An objective or latency predictor returned something that is not a number, or is not one."""


class PluginImportError(NasLLMError, ImportError):
    """A ``"pkg.module:Name"`` path (objective, predictor, baseline...) that does not import."""


__all__ = ["NasLLMError", "ConfigError", "RunFolderError", "ModelMismatchError", "UnsupportedModelError", "ModelFileError",
           "ObjectiveValueError", "ObjectiveTypeError", "PluginImportError"]
