"""`python -m wit_retrieval ...` is the `wit-retrieval` command (what `torchrun -m wit_retrieval train` runs)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
