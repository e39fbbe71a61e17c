"""Pure parts of the snapshotter: containerd's filter syntax and the mount planner."""

from __future__ import annotations

import pytest

from graphdriver.errors import InvalidSnapshotRequest, TooManyLayers
from graphdriver.serve.snapshots import filters
from graphdriver.serve.snapshots.mounts import MOUNT_DATA_MAX, Layout, plan_mounts, short_name
from graphdriver.serve.snapshots.store import Kind


def _match(text: list[str], kind="active", name="n", parent="", labels=None) -> bool:
    return filters.parse(text).match(filters.snapshot_adaptor(kind, name, parent, labels or {}))


def test_filter_selectors():
    assert _match(["name==n"]) and not _match(["name==m"])
    assert _match(['name=="n"']) and _match(["name!=m"]) and not _match(["name!=n"])
    assert _match(['labels."a.b/c"==x'], labels={"a.b/c": "x"})
    assert _match(["labels.a.b==x"], labels={"a.b": "x"})  # unquoted dotted path joins with "."
    assert not _match(["labels.a"], labels={}) and _match(["labels.a"], labels={"a": ""})
    assert _match(["labels.a!=x"])  # an absent field is "" for !=
    assert _match(["kind==view,name~=^n$"], kind="view") and not _match(["kind==view,name==m"], kind="view")
    assert _match(["name==m", "name==n"])  # several strings: OR
    assert _match(["name~=|a|"], name="xa")
    assert _match([r'name=="tab\there"'], name="tab\there")
    assert _match([""]) and _match([])


@pytest.mark.parametrize("bad", ["name==", "name=n", "name==a b", ".name", "name.==a", '"open', "name~=[",
                                 "name==a,", "labels.\"x\"==1 junk", "!=a",
                                 "name~=|a|b|"])
def test_filter_errors_name_the_filter(bad):
    with pytest.raises(InvalidSnapshotRequest) as ei:
        filters.parse([bad])
    assert repr(bad) in str(ei.value)


def test_plan_shapes():
    lay = Layout("/r")
    p = plan_mounts(lay, 5, Kind.ACTIVE, [])
    assert [(m.type, m.source, m.options) for m in p.mounts] == [("bind", "/r/snapshots/5/fs", ("rw", "rbind"))]
    p = plan_mounts(lay, 5, Kind.VIEW, [3])
    assert [(m.type, m.source, m.options) for m in p.mounts] == [("bind", "/r/snapshots/3/fs", ("ro", "rbind"))]
    p = plan_mounts(lay, 5, Kind.ACTIVE, [3, 1])
    assert p.mounts[0].options == ("index=off", "workdir=/r/snapshots/5/work", "upperdir=/r/snapshots/5/fs",
                                   "lowerdir=/r/snapshots/3/fs:/r/snapshots/1/fs")
    p = plan_mounts(lay, 5, Kind.VIEW, [3, 1])
    assert p.mounts[0].options == ("index=off", "lowerdir=/r/snapshots/3/fs:/r/snapshots/1/fs") and not p.short
    assert plan_mounts(lay, 5, Kind.ACTIVE, [3, 1], copy_mode=True).mounts[0].type == "bind"
    with pytest.raises(ValueError):
        plan_mounts(lay, 5, Kind.COMMITTED, [])


def test_plan_long_chains_use_short_links():
    root = "/a/rather/long/root/directory/that/eats/the/page"
    lay = Layout(root)
    parents = list(range(100000, 100128))
    p = plan_mounts(lay, 200000, Kind.ACTIVE, parents)
    lower = p.mounts[0].options[-1]
    assert p.short and lower.split("=", 1)[1].split(":")[:2] == [f"{root}/l/255s", f"{root}/l/255t"]
    assert short_name(100000) == "255s" and lay.link_target(100000) == "../snapshots/100000/fs"
    # containerd strips the links' common directory (and chdirs there): then it fits in a page.
    compact = lower.replace(f"{root}/l/", "")
    assert len(",".join([*p.mounts[0].options[:-1], compact])) <= MOUNT_DATA_MAX < len(lower)
    assert plan_mounts(lay, 200000, Kind.ACTIVE, list(range(100000, 100500))).short
    with pytest.raises(TooManyLayers, match="500"):
        plan_mounts(lay, 200000, Kind.ACTIVE, list(range(501)))
