"""Changes as dockerd 20.10 lists them (``docker diff``, measured on its overlay2 and vfs): Docker's naive rule
on every backend whose changes are Docker's naive ones (overlay2 native or not, vfs). A copy-up that changes
nothing the rule sees is no change; only ``security.capability`` of the xattrs counts; an mtime is the same
to the second when either side has no nanoseconds; a directory written in and put back is no change."""

from __future__ import annotations

import io
import os
import struct

import pytest
from archive.tarbuild import directory, file, tar

from graphdriver import Driver

#: A valid VFS_CAP_REVISION_2 value (cap_net_bind_service, effective).
CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)


def _base(d: Driver) -> None:
    d.create("base")
    d.apply_diff("base", None, io.BytesIO(tar(
        directory("bin"), file("bin/sh", b"shell"), directory("etc"), file("etc/chmod", b"c"),
        file("etc/samemode", b"s"), file("etc/xattr", b"x"), file("etc/ns", b"n"), file("etc/cap", b"p"),
        directory("srv"), file("srv/keep", b"k"))))
    d.create("rw", "base", rw=True)


def test_changes_follow_dockers_naive_rule(driver: Driver) -> None:
    if driver.whiteout_format == "aufs":
        pytest.skip("aufs's native changes are Docker's aufs ones: every copy-up is a change")
    _base(driver)
    top = driver.get("rw")
    try:
        os.link(os.path.join(top, "bin/sh"), os.path.join(top, "bin/sh2"))  # bin/sh copied up, unchanged
        os.chmod(os.path.join(top, "etc/chmod"), 0o600)
        os.chmod(os.path.join(top, "etc/samemode"), 0o644)  # the mode it had
        os.setxattr(os.path.join(top, "etc/xattr"), "user.note", b"v")  # not carried by a layer tar
        st = os.stat(os.path.join(top, "etc/ns"))
        os.utime(os.path.join(top, "etc/ns"), ns=(st.st_atime_ns, st.st_mtime_ns + 5))  # same second
        os.setxattr(os.path.join(top, "etc/cap"), "security.capability", CAPABILITY)
        with open(os.path.join(top, "srv/tmp"), "w") as f:  # srv written in (its mtime moves), put back
            f.write("t")
        os.unlink(os.path.join(top, "srv/tmp"))
    finally:
        driver.put("rw")
    assert driver.changes("rw", None) == [("/bin", 0), ("/bin/sh2", 1), ("/etc", 0), ("/etc/cap", 0),
                                          ("/etc/chmod", 0)]
