#!/usr/bin/env python3
"""Re-point an ELF shared object from CUDA 12 cuBLAS to CUDA 13 cuBLAS, in place.

Usage: retarget_cublas.py FILE [FILE ...]

For each (old, new) soname pair of equal length (libcublas.so.12 -> libcublas.so.13,
libcublasLt.so.12 -> libcublasLt.so.13):
  (a) the string in .dynstr is overwritten with the new name (same length), so the
      DT_NEEDED entry, the verneed vn_file and the vernaux vna_name that point at it
      all read the new name;
  (b) each vernaux whose name was `old` gets vna_hash = elf_hash(new) and the
      VER_FLG_WEAK flag (0x2), so a missing version is not fatal;
  (c) every dynamic symbol whose .gnu.version index pointed at such a vernaux gets
      index 1 (VER_NDX_GLOBAL): an unversioned lookup, accepted by any definer.
Nothing is moved or resized. A file already re-pointed is left as it is.

Needs pyelftools, which is not a project dependency: scripts/device/pack_faiss_gpu.sh
installs it into a temporary directory (`pip install --target`) for this run only.
"""

import argparse
import struct
from pathlib import Path

from elf_import import elf_file  # beside this file

VER_FLG_WEAK = 0x2
PAIRS = [
    (b"libcublas.so.12", b"libcublas.so.13"),
    (b"libcublasLt.so.12", b"libcublasLt.so.13"),
]


def elf_hash(name: bytes) -> int:
    h = 0
    for c in name:
        h = ((h << 4) + c) & 0xFFFFFFFF
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


def patch(path: str) -> list[str]:
    ELFFile = elf_file()
    with open(path, "rb") as f:
        data = bytearray(f.read())
    with open(path, "rb") as f:
        elf = ELFFile(f)
        assert elf.elfclass == 64 and elf.little_endian, "x86_64 ELF64 LE only"
        dynstr = elf.get_section_by_name(".dynstr")
        dynsym = elf.get_section_by_name(".dynsym")
        versym = elf.get_section_by_name(".gnu.version")
        verneed = elf.get_section_by_name(".gnu.version_r")
        dynamic = elf.get_section_by_name(".dynamic")
        s_off, s_size = dynstr["sh_offset"], dynstr["sh_size"]
        nsyms = dynsym["sh_size"] // dynsym["sh_entsize"]
        sym_off = dynsym["sh_offset"]
        vs_off = versym["sh_offset"] if versym else None
        vn_off = verneed["sh_offset"] if verneed else None
        vn_num = verneed["sh_info"] if verneed else 0
        dyn_entries = [(t.entry.d_tag, t.entry.d_val) for t in dynamic.iter_tags()]

    strtab = data[s_off : s_off + s_size]
    changes = []

    # All offsets into .dynstr that the loader may read (to detect tail-merged strings).
    refs = set()
    for i in range(nsyms):
        (st_name,) = struct.unpack_from("<I", data, sym_off + i * 24)
        refs.add(st_name)
    for tag, val in dyn_entries:
        if tag in ("DT_NEEDED", "DT_SONAME", "DT_RPATH", "DT_RUNPATH"):
            refs.add(val)
    vern = []  # (vernaux file offset, vna_other, vna_name) for every vernaux
    if vn_off is not None:
        p = vn_off
        for _ in range(vn_num):
            _vn_version, vn_cnt, vn_file, vn_aux, vn_next = struct.unpack_from("<HHIII", data, p)
            refs.add(vn_file)
            a = p + vn_aux
            for _ in range(vn_cnt):
                _hash, _flags, vna_other, vna_name, vna_next = struct.unpack_from("<IHHII", data, a)
                refs.add(vna_name)
                vern.append((a, vna_other, vna_name))
                if not vna_next:
                    break
                a += vna_next
            if not vn_next:
                break
            p += vn_next

    for old, new in PAIRS:
        assert len(old) == len(new)
        # (a) overwrite every NUL-terminated occurrence of `old` in .dynstr
        offs = []
        start = 0
        while (i := strtab.find(old + b"\0", start)) >= 0:
            if i != 0 and strtab[i - 1] != 0:
                raise SystemExit(f"{path}: {old!r} is tail-merged at {i}; refusing")
            offs.append(i)
            start = i + 1
        for i in offs:
            inner = [r for r in refs if i < r < i + len(old)]
            if inner:
                raise SystemExit(f"{path}: references into the middle of {old!r}: {inner}")
            data[s_off + i : s_off + i + len(new)] = new
            changes.append(f"dynstr@{i:#x}: {old.decode()} -> {new.decode()}")
        # (b) vernaux entries named `old`
        other_idx = set()
        for a, other, name_off in vern:
            if name_off in offs:
                vna_hash, vna_flags = struct.unpack_from("<IH", data, a)
                assert vna_hash == elf_hash(old), "unexpected vna_hash"
                struct.pack_into("<IH", data, a, elf_hash(new), vna_flags | VER_FLG_WEAK)
                other_idx.add(other)
                changes.append(
                    f"vernaux@{a:#x} (idx {other}): "
                    f"hash {vna_hash:#x}->{elf_hash(new):#x}, flags |= WEAK"
                )
        # (c) versym of symbols using those version indexes -> 1 (global)
        if vs_off is not None and other_idx:
            n = 0
            for i in range(nsyms):
                (v,) = struct.unpack_from("<H", data, vs_off + 2 * i)
                if (v & 0x7FFF) in other_idx:
                    struct.pack_into("<H", data, vs_off + 2 * i, 1)
                    n += 1
            changes.append(f"versym: {n} symbols of idx {sorted(other_idx)} -> 1 (VER_NDX_GLOBAL)")

    with open(path, "wb") as f:
        f.write(data)
    return changes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "files", metavar="FILE", nargs="+", help="an ELF shared object, edited in place"
    )
    args = parser.parse_args()
    for p in args.files:
        if not Path(p).is_file():
            parser.error(f"{p}: no such file")
    elf_file()
    for p in args.files:
        for c in patch(p):
            print(f"{p}: {c}")


if __name__ == "__main__":
    main()
