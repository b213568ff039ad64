"""Runs every notebook here headless and fails on the first cell that raises; CI runs this so the
notebooks never rot. Usage: python3 notebooks/run_all.py"""

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent

for path in sorted(HERE.glob("*.ipynb")):
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    print(f"{path.name}: ok", file=sys.stderr)
