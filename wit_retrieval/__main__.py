"""`python -m wit_retrieval ...` is the `wit-retrieval` command (what `torchrun -m wit_retrieval train|embed` runs)."""

from wit_retrieval.cli import main  # absolute: torchrun -m runs this file without its package

if __name__ == "__main__":
    main()
