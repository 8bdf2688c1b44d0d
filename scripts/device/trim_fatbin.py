#!/usr/bin/env python3
"""Keep only chosen cubins in every fatbin container of an ELF's .nv_fatbin, in place.

Usage: trim_fatbin.py FILE KIND:ARCH [KIND:ARCH ...]   (kind 2 = SASS/cubin, 1 = PTX;
arch 90 = sm_90), e.g. `trim_fatbin.py libfaiss.so 2:90`.

Each container (magic 0xBA55ED50) keeps its start offset (the registration wrappers
point at it); its entries for the kept (kind, arch) pairs are moved to the front, the
container's size field is updated, and the freed tail is zeroed (compresses to nothing).
Running it again with the same pairs changes nothing.

Needs pyelftools, which is not a project dependency: scripts/device/pack_faiss_gpu.sh
installs it into a temporary directory (`pip install --target`) for this run only.
"""

import argparse
import struct
from pathlib import Path

from elf_import import elf_file  # beside this file

MAGIC = 0xBA55ED50


def trim(path: str, keep: set[tuple[int, int]]) -> None:
    ELFFile = elf_file()
    with open(path, "rb") as f:
        elf = ELFFile(f)
        sec = elf.get_section_by_name(".nv_fatbin")
        off, size = sec["sh_offset"], sec["sh_size"]
    with open(path, "r+b") as f:
        f.seek(off)
        data = bytearray(f.read(size))
        p = 0
        n_cont = kept = dropped = freed = 0
        while p + 16 <= len(data):
            magic, _ver, hsz, fsz = struct.unpack_from("<IHHQ", data, p)
            if magic != MAGIC:
                p += 8
                continue
            n_cont += 1
            q, end = p + hsz, p + hsz + fsz
            entries = []
            while q < end:
                kind, _v, ehsz, psz = struct.unpack_from("<HHIQ", data, q)
                arch = struct.unpack_from("<I", data, q + 28)[0]
                entries.append((kind, arch, bytes(data[q : q + ehsz + psz])))
                q += ehsz + psz
            assert q == end, f"container at {p:#x} malformed"
            sel = [e for e in entries if (e[0], e[1]) in keep]
            if not sel:
                found = [(k, a) for k, a, _ in entries]
                raise SystemExit(f"container at {p:#x} has none of {keep}: {found}")
            blob = b"".join(e[2] for e in sel)
            data[p + hsz : end] = blob + bytes(fsz - len(blob))
            struct.pack_into("<Q", data, p + 8, len(blob))
            kept += len(sel)
            dropped += len(entries) - len(sel)
            freed += fsz - len(blob)
            p = end
        assert len(data) == size
        f.seek(off)
        f.write(data)
    print(
        f"{path}: {n_cont} containers, kept {kept} entries, dropped {dropped}, "
        f"zeroed {freed / 2**20:.1f} MiB"
    )


def kind_arch(text: str) -> tuple[int, int]:
    kind, sep, arch = text.partition(":")
    if not (sep and kind.isdigit() and arch.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not KIND:ARCH, e.g. 2:90")
    return int(kind), int(arch)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="an ELF with a .nv_fatbin, edited in place")
    parser.add_argument("keep", metavar="KIND:ARCH", nargs="+", type=kind_arch, help="kept cubins")
    args = parser.parse_args()
    if not Path(args.file).is_file():
        parser.error(f"{args.file}: no such file")
    elf_file()
    trim(args.file, set(args.keep))


if __name__ == "__main__":
    main()
