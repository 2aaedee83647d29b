"""Writing a file so that no reader ever sees half of it.

The content goes to a temporary file with a name no other writer uses, in the target's
directory (so the rename stays on one filesystem), and is renamed over the target only once
complete. A rename is atomic on POSIX: a reader opens the old file or the new one, never a
mixture. An interrupted writer leaves at most its temporary file (`.NAME.PID-RANDOM.tmp`),
never a half-written NAME. Two processes writing the same target both succeed, and the last
rename wins.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write that appears at `path` only when the block ends without error.

    `durable` flushes it to disk before the rename, for files whose loss after a power cut
    would matter (not for caches, which are rebuilt when found damaged).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """`data` written to `path` atomically, and flushed to disk before it appears there."""
    with atomic_file(path, durable=True) as f:
        f.write(data)
