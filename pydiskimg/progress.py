"""What a build reports to a ``progress`` callback (kept apart so the API imports it cheaply)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """One report to a build's ``progress`` callback.

    Each stage (``scan``, ``plan``, then ``write``, ``guest``, ``convert``, ``postVM`` as they
    apply) reports once when it starts (``seconds`` None, ``done`` = ``total`` = 0) and once
    when it ends (``seconds``: its duration, the figure :attr:`pydiskimg.BuildResult.stages` keeps).  While
    the ``write`` stage copies file data it also reports ``done`` of ``total`` bytes copied.
    ``text`` is the line the command line prints for the stage.
    """

    stage: str
    text: str
    done: int = 0
    total: int = 0
    seconds: float | None = None


#: a build's ``progress`` argument: called with each :class:`ProgressEvent`
ProgressCallback = Callable[[ProgressEvent], object]
