"""A consumer of pydiskimg's documented Python API, and nothing else of pydiskimg.

tests/test_api.py runs it (``python tests/api_consumer.py WORKDIR EXAMPLES``) and compares what
it writes with what the command line writes for the same inputs; it also type-checks it with
``mypy --strict``.  It writes into WORKDIR:

* ``api-efi.img`` (efi, ESP, contents) and ``api-legacy.qcow2`` (legacy, qcow2) with
  ``build(ImageSpec(...))``, and ``api-toml.img`` with ``ImageSpec.from_toml``;
* ``api-ext4.img``, ``api-fat.img``, ``api-table.img`` with the per-format entry points;
* ``api-split/`` with ``split``;
* ``api.json``: every result as JSON, and the progress events seen.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pydiskimg
from pydiskimg import BuildResult, DiffResult, ImageSpec, ProgressEvent


def main(work: Path, examples: Path) -> None:
    events: list[ProgressEvent] = []
    out: dict[str, Any] = {}

    efi = ImageSpec(
        root=examples / "rootfs",
        output=work / "api-efi.img",
        partition_table="efi",
        esp=examples / "esp",
        contents=str(examples / "contents.json"),
        disk_size="128M",
        boot_size="64M",
        source_date_epoch=1_700_000_000,
        clamp_mtime=True,
        all_root=True,
    )
    r: BuildResult = pydiskimg.build(efi, progress=events.append)
    out["efi"] = r.to_json()
    out["efi_partitions"] = [[p.number, p.offset, p.size, p.type, p.guid] for p in r.partitions]
    out["efi_root_uuid"] = r.root.uuid
    out["events"] = [[e.stage, e.done, e.total, e.seconds] for e in events]

    legacy = ImageSpec(
        root=str(examples / "rootfs"),
        output=str(work / "api-legacy.qcow2"),
        format="qcow2",
        additional_space=8 * 1024 * 1024,
        root_gpuid="12345678-1234-4234-8234-123456789ABC",
        source_date_epoch="1700000000",
        all_root=True,
    )
    out["legacy"] = pydiskimg.build(legacy).to_json()
    out["dry_run"] = pydiskimg.build(legacy, dry_run=True).to_json()

    toml = ImageSpec.from_toml(examples / "demo.toml", output=work / "api-toml.img", all_root=True)
    out["toml"] = pydiskimg.build(toml).to_json()

    out["inspect"] = pydiskimg.inspect(r.output)
    out["inspect_files"] = pydiskimg.inspect(work / "api-legacy.qcow2", files=True)
    same: DiffResult = pydiskimg.diff(r.output, r.output)
    other: DiffResult = pydiskimg.diff(work / "api-efi.img", work / "api-toml.img")
    out["diff_same"] = same.to_json()
    out["diff_other"] = other.to_json()
    out["diff_lines"] = other.lines()
    out["split"] = pydiskimg.split(r.output, work / "api-split")

    out["ext4"] = pydiskimg.make_ext4(examples / "rootfs", work / "api-ext4.img", size="auto",
                                      additional_space="1M", label="data",
                                      contents=examples / "contents.json", all_root=True,
                                      source_date_epoch=86400)
    out["fat"] = pydiskimg.make_fat(examples / "esp", work / "api-fat.img", 40 * 1024 * 1024,
                                    label="EFI", volume_id="DEAD-BEEF")
    out["table"] = pydiskimg.make_partition_table(work / "api-table.img", "hybrid", "300M",
                                                  boot_size="100M")

    errors: list[str] = []
    try:
        ImageSpec(root=examples / "rootfs", disk_size="12Q")
    except pydiskimg.Error as e:
        errors.append(str(e))
    out["errors"] = errors
    (work / "api.json").write_text(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
