"""Writing media files in place: the temporary sibling a file is written to before its atomic rename."""

from __future__ import annotations

import os
import stat
import uuid


def new_temp_file(path: str, parent: str, suffix: str = ".mp4") -> str:
    """Create the temporary sibling a media file is written to, with the mode a plain ``open(path, "w")`` gives:
    an existing file's permission bits are kept, a new file gets ``0o666`` minus the umask (``mkstemp``'s
    0600 would survive the final rename)."""
    for _ in range(100):
        tmp_path = os.path.join(parent, f".tmp-{uuid.uuid4().hex[:12]}{suffix}")
        try:
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
        except FileExistsError:
            continue
        try:
            if os.path.isfile(path):
                os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
        except BaseException:
            os.close(fd)
            os.remove(tmp_path)
            raise
        os.close(fd)
        return tmp_path
    raise FileExistsError(f"could not create a temporary file in {parent}")
