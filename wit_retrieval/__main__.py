"""`python -m wit_retrieval ...` is the `wit-retrieval` command (what `torchrun -m wit_retrieval train|embed` runs).

Under torchrun or SLURM, each rank leaves quickly once its command has finished: non-daemon
threads are joined, exit handlers run and output is flushed as at any exit, but the interpreter's
teardown of torch's and open_clip's modules (seconds a process, while the launcher waits for
every rank) is skipped. One process exits as usual.
"""

import os
import sys

from wit_retrieval.cli import main  # absolute: torchrun -m runs this file without its package


def exit_status(code) -> int:
    """The process status of `SystemExit(code)`, as the interpreter maps it (a message means 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _one_of_many() -> bool:
    from wit_retrieval.distributed import world_from_env

    try:
        return world_from_env().distributed
    except Exception:  # unusable launcher variables: the command has said so; exit as usual
        return False


def run() -> None:
    """main(), then the quick exit of a rank (see the module's docstring)."""
    code = None
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    if not _one_of_many():
        sys.exit(code)
    import atexit
    import threading

    status = exit_status(code)
    threading._shutdown()  # what the interpreter does first at exit: join non-daemon threads
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    run()
