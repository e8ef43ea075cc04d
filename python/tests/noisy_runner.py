"""Starts the real runner, but makes Python, libc and a raw fd write hit fd 1 right after the protocol fd is reserved,
the way native libraries do. The protocol stream must stay clean."""

import ctypes
import os
import sys

import pixelai_runner.__main__ as entry

_reserve = entry.reserve_stdout_for_protocol


def _reserve_then_make_noise() -> int:
    fd = _reserve()
    os.write(1, b"NOISE raw fd-1 write\n")
    libc = ctypes.CDLL(None)
    libc.printf(b"NOISE libc printf\n")
    libc.fflush(None)
    print("NOISE python print")
    return fd


entry.reserve_stdout_for_protocol = _reserve_then_make_noise
sys.exit(entry.main(sys.argv[1:]))
