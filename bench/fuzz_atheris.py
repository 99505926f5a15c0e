#!/usr/bin/env python3
"""Coverage-guided fuzzing of the readers with atheris (``pip install atheris``).

    python3 bench/fuzz_atheris.py -max_total_time=60

Builds the same reference image as ``tests/test_fuzz_readers.py`` (sgdisk, mkfs.ext4 -d,
e2fsck -fD, mkfs.vfat, mcopy), then lets atheris choose byte flips inside its structures
(superblock, group descriptors, inode table, extent/dir/xattr blocks, journal superblock, GPT,
FAT) and runs every reader and ``diff`` on the result.  Any exception other than
``pydiskimg.errors.Error`` is a crash: atheris stops and writes the crashing input.
"""

from __future__ import annotations

import atexit
import contextlib
import pathlib
import shutil
import sys
import tempfile

import atheris

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

with atheris.instrument_imports(include=["pydiskimg"]):
    import pydiskimg.audit.diff  # noqa: F401
    import pydiskimg.audit.disk  # noqa: F401
    import pydiskimg.audit.fatdiff  # noqa: F401
    import pydiskimg.ext4.read  # noqa: F401
    import pydiskimg.fat.read  # noqa: F401
    import pydiskimg.gpt.read  # noqa: F401
    import pydiskimg.mbr.read  # noqa: F401

import test_fuzz_readers as T  # noqa: E402

from pydiskimg.errors import Error  # noqa: E402


class _Factory:
    def mktemp(self, name: str) -> pathlib.Path:
        d = tempfile.mkdtemp(prefix=f"pydiskimg-atheris-{name}-")
        atexit.register(shutil.rmtree, d, True)
        return pathlib.Path(d)


BASE = T.base._get_wrapped_function()(_Factory())  # the fixture's builder, called directly
CLEAN = T.BytesSource(BASE.data, "clean")
REGIONS = [BASE.regions[r] for r in T.REGIONS]


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    start, length = REGIONS[fdp.ConsumeIntInRange(0, len(REGIONS) - 1)]
    img = bytearray(BASE.data)
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        pos = fdp.ConsumeIntInRange(0, length - 1)
        img[start + pos] = fdp.ConsumeIntInRange(0, 255)
    src = T.BytesSource(bytes(img), "fuzzed")
    T.exercise(src, BASE.root_size)
    if fdp.ConsumeBool():
        with contextlib.suppress(Error):
            pydiskimg.audit.diff.diff_sources(CLEAN, src)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
