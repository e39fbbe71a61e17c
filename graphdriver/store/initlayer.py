"""The ``<id>-init`` layer: what dockerd puts between an image and a container's read-write layer.

:func:`plan` (pure) lists the entries: ``/.dockerenv``, ``/etc/hostname``, ``/etc/hosts``,
``/etc/resolv.conf``, ``etc/mtab -> /proc/mounts`` and the mount points ``dev/console``, ``dev/pts``,
``dev/shm``, ``proc``, ``sys``. :func:`write` carries a plan out inside a mounted init layer.
:func:`netns_addresses` reads a network namespace's addresses with pyroute2.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass

from ..errors import GraphDriverError
from .files import write_all

HOST_RESOLV = "/etc/resolv.conf"
#: What Docker falls back to when the host names only loopback resolvers (unreachable from a container).
FALLBACK_DNS = ("8.8.8.8", "8.8.4.4")
NETNS_DIR = "/var/run/netns"
#: A loopback or IPv6 ``nameserver`` line and the blank lines after it, as libnetwork's filter drops them.
_UNREACHABLE_NS = re.compile(r"(?m)^nameserver\s+(127\.([0-9]{1,3}\.){2}[0-9]{1,3}|::1$"
                             r"|([0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(%\w+)?)\s*\n*")
_NAMESERVER = re.compile(r"(?m)^\s*nameserver\s+\S")


@dataclass(frozen=True)
class Entry:
    """One thing in the init layer: kind "dir", "file" (``content``) or "symlink" (``target``)."""

    path: str
    kind: str
    mode: int = 0o755
    content: bytes | None = None
    target: str = ""


def hosts_file(hostname: str, addresses: list[str], extra_hosts: list[tuple[str, str]]) -> bytes:
    """/etc/hosts as dockerd writes it: the localhost lines, the extra hosts, then the hostname mapped to
    each of the container's addresses (none without addresses, as with docker's ``--network none``)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix", "ff02::1\tip6-allnodes",
             "ff02::2\tip6-allrouters"]
    lines += [f"{ip}\t{name}" for name, ip in extra_hosts]
    short = hostname.split(".", 1)[0]
    names = hostname if short == hostname else f"{hostname} {short}"
    lines += [f"{ip}\t{names}" for ip in addresses]
    return ("\n".join(lines) + "\n").encode()


def _last_words(text: str, key: str) -> list[str]:
    """The words after the last ``key`` line of a resolv.conf (libnetwork's GetSearchDomains/GetOptions)."""
    found: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == key:
            found = words[1:]
    return found


def resolv_conf(dns: list[str], host_resolv: str | None = None) -> bytes:
    """/etc/resolv.conf as dockerd 20.10 writes it for a container without IPv6.

    With ``dns``: the host's last ``search`` line, the given servers, the host's last ``options`` line.
    Without: the host's file as it is, less its loopback and IPv6 ``nameserver`` lines (unreachable from
    the container); when none is left, Docker's fallback servers are appended.
    """
    host = host_resolv or ""
    if dns:
        search, options = _last_words(host, "search"), _last_words(host, "options")
        out = ([f"search {' '.join(search)}"] if search else []) + [f"nameserver {s}" for s in dns]
        out += [f"options {' '.join(options)}"] if options else []
        return ("\n".join(out) + "\n").encode()
    kept = _UNREACHABLE_NS.sub("", host)
    if not _NAMESERVER.search(kept):
        kept += "\n" + "".join(f"nameserver {s}\n" for s in FALLBACK_DNS)
    return kept.encode()


def parse_add_host(spec: str) -> tuple[str, str]:
    """``NAME:IP`` (as ``--add-host``) -> (name, ip); the IP may be IPv6 (the first ``:`` splits)."""
    name, sep, ip = spec.partition(":")
    try:
        if not sep or not name:
            raise ValueError
        ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        raise GraphDriverError(f"invalid --add-host {spec!r}: want NAME:IP") from None
    return name, ip.strip("[]")


def check_dns(ip: str) -> str:
    """``ip`` if it is an IP address, else a GraphDriverError naming it."""
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise GraphDriverError(f"invalid --dns {ip!r}: not an IP address") from None
    return ip


def plan(hostname: str, addresses: list[str], extra_hosts: list[tuple[str, str]], dns: list[str],
         host_resolv: str | None = None) -> list[Entry]:
    """Every entry of the init layer, parents before children."""
    return [
        Entry("dev", "dir"), Entry("dev/pts", "dir"), Entry("dev/shm", "dir"),
        Entry("dev/console", "file", 0o755, b""),
        Entry("proc", "dir"), Entry("sys", "dir"), Entry("etc", "dir"),
        Entry(".dockerenv", "file", 0o755, b""),
        Entry("etc/hostname", "file", 0o644, (hostname + "\n").encode()),
        Entry("etc/hosts", "file", 0o644, hosts_file(hostname, addresses, extra_hosts)),
        Entry("etc/resolv.conf", "file", 0o644, resolv_conf(dns, host_resolv)),
        Entry("etc/mtab", "symlink", target="/proc/mounts"),
    ]


def read_host_resolv() -> str | None:
    """The host's /etc/resolv.conf, or None."""
    try:
        with open(HOST_RESOLV, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def write(rootfs: str, entries: list[Entry]) -> None:
    """Carry ``entries`` out under ``rootfs`` (the mounted init layer), never following a symlink out.

    As dockerd does, directories already in the image are kept and anything else at an entry's path is
    replaced (see :func:`_apply`); the parents of an entry are entries before it.
    """
    dirfd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for e in entries:
            parent, name = os.path.split(e.path)
            pfd = _open_dir(dirfd, parent, rootfs)
            try:
                _apply(pfd, name, e, rootfs)
            finally:
                if pfd != dirfd:
                    os.close(pfd)
    finally:
        os.close(dirfd)


def _open_dir(dirfd: int, rel: str, rootfs: str) -> int:
    fd = dirfd
    for part in [p for p in rel.split("/") if p]:
        try:
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError as e:
            raise GraphDriverError(f"init layer: {rel} in {rootfs} is not a directory ({e.strerror})") from None
        if fd != dirfd:
            os.close(fd)
        fd = nfd
    return fd


def _apply(pfd: int, name: str, e: Entry, rootfs: str) -> None:
    """One entry, as moby's initlayer.Setup: whatever is at the path in the image, unless a directory,
    is unlinked and made anew (a symlinked ``/etc`` or a file ``/dev/shm`` becomes a directory, a
    ``/dev/console`` device an empty file, ``/etc/mtab`` the symlink); a directory is kept as it is."""
    try:
        st = os.lstat(name, dir_fd=pfd)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        if e.kind == "file" and e.content:
            raise GraphDriverError(f"init layer: {e.path} is a directory in the image at {rootfs}")
        return
    if st is not None:
        os.unlink(name, dir_fd=pfd)
    if e.kind == "dir":
        os.mkdir(name, e.mode, dir_fd=pfd)
        os.chmod(name, e.mode, dir_fd=pfd)
        return
    if e.kind == "symlink":
        os.symlink(e.target, name, dir_fd=pfd)
        return
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, e.mode, dir_fd=pfd)
    try:
        write_all(fd, e.content or b"", os.path.join(rootfs, e.path.lstrip("/")))
        os.fchmod(fd, e.mode)
    finally:
        os.close(fd)


def netns_path(netns: str) -> str:
    """A network namespace given as a name (under /var/run/netns) or a path."""
    return netns if "/" in netns else os.path.join(NETNS_DIR, netns)


def netns_addresses(netns: str) -> list[str]:
    """The global (non-loopback) addresses of a network namespace, read with pyroute2."""
    from pyroute2 import NetNS

    path = netns_path(netns)
    if not os.path.exists(path):
        raise GraphDriverError(f"network namespace {netns} not found ({path})")
    out = []
    with NetNS(path) as ns:
        for msg in ns.get_addr():
            addr = msg.get_attr("IFA_ADDRESS")
            if addr and not ipaddress.ip_address(addr).is_loopback and not ipaddress.ip_address(addr).is_link_local:
                out.append(addr)
    return out
