"""Keeps the real node's container logs after their pods are gone (stack part `pod-logs`).

The kubelet writes each container's log to `<stack>/node/pod-logs/<ns>_<pod>_<uid>/<container>/
<restart>.log` and deletes the folder with the pod, so the log of a single-use worker
vanishes when its connection ends, which is exactly when one wants to read it. This part
hard-links every such file, as soon as it appears, to `<stack>/logs/pods/<ns>_<pod>/
<container>/<restart>.log`: the link is the same file, so every line written later lands
in it too, and it survives the kubelet's deletion. A file replaced under the same name
(containerd's log rotation) is linked again as `<name>.<inode>`. Polls every 0.2 s.

`python -m voicefleet_stack.podlogs SOURCE DEST` (the stack's supervisor starts it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

PERIOD_SECONDS = 0.2


def keep_once(source: Path, dest: Path, linked: set[int]) -> int:
    """Link the log files not linked yet (by inode); returns how many were linked."""
    count = 0
    for path in source.glob("*/*/*.log*"):
        pod_dir, container = path.parent.parent.name, path.parent.name
        namespace, _, rest = pod_dir.partition("_")
        pod = rest.rpartition("_")[0] or rest
        try:
            inode = path.stat().st_ino
        except FileNotFoundError:
            continue
        if inode in linked:
            continue
        target = dest / f"{namespace}_{pod}" / container / path.name
        if target.exists():
            target = target.with_name(f"{path.name}.{inode}")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except (FileNotFoundError, FileExistsError):
            continue
        linked.add(inode)
        count += 1
    return count


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m voicefleet_stack.podlogs SOURCE DEST", file=sys.stderr)
        return 2
    source, dest = Path(argv[0]), Path(argv[1])
    dest.mkdir(parents=True, exist_ok=True)
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    linked: set[int] = set()
    print(f"keeping container logs of {source} in {dest}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        while not stop:
            keep_once(source, dest, linked)
            time.sleep(PERIOD_SECONDS)
    keep_once(source, dest, linked)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
