"""The Linux kernel as a judge: a libguestfs appliance on an image (slow tests only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pydiskimg import guestfs as gfs_helper


def launch(img: Path) -> Any:
    """A launched libguestfs handle on the raw image ``img`` (KVM first, then TCG)."""
    mod = gfs_helper.load_bindings()
    if mod is None:
        pytest.fail("python3-guestfs is not installed (scripts/install-deps --test installs it)")
    last: Exception | None = None
    for tcg in (False, True):
        g = mod.GuestFS(python_return_dict=True)
        g.set_backend("direct")
        if tcg or not gfs_helper.kvm_device_usable():
            g.set_backend_settings(["force_tcg"])
        g.add_drive_opts(str(img), format="raw", readonly=False)
        try:
            g.launch()
            return g
        except RuntimeError as e:  # KVM present but unusable: TCG
            last = e
            g.close()
    raise AssertionError(f"libguestfs appliance did not start: {last}")
