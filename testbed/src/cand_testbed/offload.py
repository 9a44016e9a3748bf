"""Lab tool: switches off checksum and segmentation offloads on interfaces (what
`ethtool -K IF tx off tso off gso off gro off` does; ethtool is not installed here).

Why: a software switch (BMv2) reads and writes whole frames on raw sockets. A veth that
offloads hands it TCP segments whose checksum is left for a NIC to fill in, or 64 KB
super-segments to be cut later; BMv2 forwards them as they are and the receiver drops
them. With the offloads off on every interface that sends into the switch, each frame is
complete on the wire, as between real machines.

    python -m cand_testbed.offload IF [IF ...]
"""

from __future__ import annotations

import ctypes
import fcntl
import socket
import struct
import sys

SIOCETHTOOL = 0x8946
# the legacy ethtool set commands (linux/ethtool.h), each taking a struct ethtool_value
ETHTOOL_STXCSUM = 0x17
ETHTOOL_STSO = 0x1F
ETHTOOL_SGSO = 0x24
ETHTOOL_SGRO = 0x2C
OFF = (ETHTOOL_STXCSUM, ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_SGRO)
IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux


class _EthtoolValue(ctypes.Structure):
    _fields_ = [("cmd", ctypes.c_uint32), ("data", ctypes.c_uint32)]


def offloads_off(ifname: str) -> None:
    """Every offload in OFF switched off on `ifname`; an OSError names the interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for cmd in OFF:
            value = _EthtoolValue(cmd, 0)
            ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value))
            try:
                fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq.ljust(IFREQ_SIZE, b"\0"))
            except OSError as e:
                raise OSError(
                    e.errno, f"{ifname}: ethtool command {cmd:#x}: {e.strerror}"
                ) from None


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m cand_testbed.offload IF [IF ...]", file=sys.stderr)
        return 2
    for ifname in argv:
        try:
            offloads_off(ifname)
        except OSError as e:
            print(f"offload: {e.strerror}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
