"""Gather benchmarks/results/*.md into benchmarks/README.md between the RESULTS markers."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
START, END = "<!-- RESULTS START -->", "<!-- RESULTS END -->"
ORDER = ["build", "fetch", "scoring", "index", "embed"]


def main() -> None:
    parts = []
    for name in ORDER + sorted(p.stem for p in (HERE / "results").glob("*.md") if p.stem not in ORDER):
        path = HERE / "results" / f"{name}.md"
        if path.exists():
            parts.append(path.read_text(encoding="utf-8").strip())
    readme = HERE / "README.md"
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    body = "\n\n".join(parts) if parts else "(no results yet: run `make bench`)"
    readme.write_text(f"{head}{START}\n{body}\n{END}{tail}", encoding="utf-8")
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
