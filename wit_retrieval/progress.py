"""Rich progress bars for long work, quiet when not on a terminal unless asked."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress

# Commands that only print (score, validate) use `console` without importing rich's progress bars.
console = Console(stderr=True)


def make_progress(*extra_columns) -> Progress:
    """A progress bar with description, bar, count, elapsed and remaining time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


@contextlib.contextmanager
def progress_task(description: str, total: float | None) -> Iterator[callable]:
    """Context manager yielding `advance(n=1, **fields)` for one progress bar."""
    with make_progress() as progress:
        task = progress.add_task(description, total=total)

        def advance(n: float = 1, **fields):
            progress.update(task, advance=n, **fields)

        yield advance
