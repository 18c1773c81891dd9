"""Keep committed notebooks clean and their outputs current.

    python tools/nbtool.py refresh notebooks/00_inventory.ipynb   # re-execute against the lab, store outputs
    python tools/nbtool.py clean notebooks/*.ipynb                # drop volatile metadata only

Refreshed notebooks keep outputs (nbval compares them) but no execution
timestamps, papermill metadata or kernel-specific noise, so diffs stay small.
Both turn nbval's comment markers (``# NBVAL_IGNORE_OUTPUT`` as a cell's first
line) into cell tags (``nbval-ignore-output``), which the reader does not see.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

# nbval's comment markers and the cell tags that say the same (nbval reads both).
MARKER_TAGS = {
    "# NBVAL_IGNORE_OUTPUT": "nbval-ignore-output",
    "# NBVAL_CHECK_OUTPUT": "nbval-check-output",
    "# NBVAL_SKIP": "nbval-skip",
    "# NBVAL_RAISES_EXCEPTION": "raises-exception",
}


def markers_to_tags(cell: nbformat.NotebookNode) -> None:
    """Move nbval comment markers at the top of a code cell into its tags."""
    lines = cell.source.split("\n")
    tags = list(cell.metadata.get("tags", []))
    while lines and lines[0].strip() in MARKER_TAGS:
        tag = MARKER_TAGS[lines.pop(0).strip()]
        if tag not in tags:
            tags.append(tag)
    cell.source = "\n".join(lines)
    if tags:
        cell.metadata["tags"] = tags


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    count = 0
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in ("tags",)}
        if cell.cell_type == "code":
            markers_to_tags(cell)
            # nbval wants an execution count on every cell that has outputs: number them in order.
            count += 1
            cell.execution_count = count if cell.get("outputs") else None
            for out in cell.get("outputs", []):
                if "execution_count" in out:
                    out.execution_count = count
    return nb


def refresh(path: Path) -> None:
    nb = nbformat.read(str(path), as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(clean(nb), str(path))


def main(argv: list[str]) -> int:
    cmd, *paths = argv
    for p in map(Path, paths):
        if cmd == "refresh":
            refresh(p)
        elif cmd == "clean":
            nbformat.write(clean(nbformat.read(str(p), as_version=4)), str(p))
        else:
            print(__doc__)
            return 2
        print(f"{cmd}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
