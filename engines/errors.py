"""The one base class of the problems a user fixes (the start-up error contract).

Every error that means "the configuration, a model, the data or the machine is not as the command
needs it" derives from :class:`UserError`: a bad config (``pipeline.config.ConfigError``), a missing
or invalid model (``engines.runtime.ModelLoadError``, ``engines.manifest.ManifestError``), a recipe
(``engines.sarde.datasets.RecipeError``), a converter (``export.detector.ExportError``,
``export.sarde.ParityError``, ``export.graph_passes.OptimizeError``), a journal
(``pipeline.journal.JournalError``), a missing TensorRT (``engines.trt_build.TensorRTUnavailable``)
or anything the daemon cannot start with (``pipeline.assets.StartupError``). Its message is one line
that says what to fix; ``sarde`` prints it as ``sarde: error: ...`` and exits with status 2.
Anything else escaping a command is a bug and keeps its traceback.
"""
from __future__ import annotations

__all__ = ["UserError", "EXIT_USER_ERROR"]

#: exit status of a command stopped by a :class:`UserError`.
EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem the user fixes; the message is one line saying what to fix."""
