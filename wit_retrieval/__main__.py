"""`python -m wit_retrieval ...`: the CLI, as `torchrun -m wit_retrieval ...` starts it on every rank."""

from wit_retrieval.cli import main  # absolute: torchrun -m runs this file without its package

if __name__ == "__main__":
    main()
