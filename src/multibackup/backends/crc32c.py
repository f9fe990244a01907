"""CRC32C of any buffer, without copying it.

``google_crc32c`` takes only ``bytes``. A part read into a reused buffer (see
``Migrator._multipart``) would then be copied whole, 8 MiB and its fresh pages per part,
just to be checksummed. The C library inside the same wheel takes a pointer: it is
called through ctypes, which releases the GIL for the call. Where the library is not
found (another packaging of the wheel) the copy is made after all.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from typing import Any

import google_crc32c


@functools.cache
def _extend() -> Any:
    """``crc32c_extend`` of the wheel's library, checked on a sample; None if unusable."""
    package = os.path.dirname(google_crc32c.__file__)
    names = (glob.glob(os.path.join(package + ".libs", "libcrc32c*"))
             + glob.glob(os.path.join(package, "libcrc32c*")))
    for name in names:
        try:
            fn = ctypes.CDLL(name).crc32c_extend
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_uint32, ctypes.POINTER(ctypes.c_ubyte), ctypes.c_size_t]
        fn.restype = ctypes.c_uint32
        sample = bytearray(b"multibackup crc32c self-test")
        if fn(0, (ctypes.c_ubyte * len(sample)).from_buffer(sample), len(sample)) \
                == google_crc32c.value(bytes(sample)):
            return fn
    return None


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """The CRC32C of ``data``."""
    if isinstance(data, bytes):
        return int(google_crc32c.value(data))
    view = memoryview(data)
    fn = _extend() if not view.readonly and view.contiguous else None
    if fn is None or not view.nbytes:
        return int(google_crc32c.value(view.tobytes()))
    array = (ctypes.c_ubyte * view.nbytes).from_buffer(view.cast("B"))
    return int(fn(0, array, view.nbytes))
