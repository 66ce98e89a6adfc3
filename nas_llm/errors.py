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


__all__ = ["NasLLMError", "ConfigError", "RunFolderError", "ModelMismatchError"]
