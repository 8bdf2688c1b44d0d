"""pyelftools' ELFFile for the ELF tools beside this file (``retarget_cublas.py``,
``trim_fatbin.py``), imported once their arguments are read, so --help works without it."""

from __future__ import annotations

import sys
from pathlib import Path


def elf_file():
    """pyelftools' ELFFile, or a one-line exit saying how to install it."""
    try:
        from elftools.elf.elffile import ELFFile
    except ModuleNotFoundError:
        raise SystemExit(
            f"{Path(sys.argv[0]).name} needs pyelftools, which is not installed:"
            " pip install pyelftools (pack_faiss_gpu.sh installs it in a temporary folder)"
        ) from None
    return ELFFile
