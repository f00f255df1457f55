"""The `voicefleet` command: run the local stack (`up`, `up --detach`, `down`, `status`)."""

from __future__ import annotations

import argparse
import sys

from . import components, stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="voicefleet",
        description="Run voicefleet's local stack: a real Kubernetes control plane (etcd, "
        "kube-apiserver, controller-manager, scheduler, kwok nodes), a LiveKit server, "
        "PostgreSQL and a Letta server with a deterministic scripted model, all on 127.0.0.1.",
        epilog="Files live under $VOICEFLEET_HOME (default ~/.cache/voicefleet); the running "
        "stack under $VOICEFLEET_STACK_DIR (default $VOICEFLEET_HOME/stack). The operator's "
        f"{', '.join(components.OPERATOR_TUNABLES)} "
        "are passed on from the environment of `up` (for example VOICEFLEET_WARM_POOL_SIZE=2 "
        "voicefleet up: a warm pool of 2).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start every part; foreground until Ctrl-C unless --detach")
    p_up.add_argument(
        "--detach",
        action="store_true",
        help="return once all parts are healthy and the env file is written",
    )
    p_up.add_argument(
        "--without-letta",
        action="store_true",
        help="skip the model, PostgreSQL, Letta and the gateway (Kubernetes, LiveKit and the "
        "operator only; faster)",
    )
    p_up.add_argument(
        "--real-node",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="node-0, a real kubelet + containerd + runc node that runs worker pods in "
        "containers. Default: on where the machine can run it (root, cgroups, overlayfs), "
        "else workers run as host processes and `up` says why; --real-node insists (fails "
        "with the reasons), --no-real-node turns it off. Env: VOICEFLEET_REAL_NODE=1|0",
    )
    sub.add_parser("down", help="stop every process the stack started")
    sub.add_parser("status", help="list the stack's processes and whether they run")
    sub.add_parser("env", help="print the path of the env file of the running stack")
    p_restart = sub.add_parser("restart", help="restart one part of the running stack (e.g. letta)")
    p_restart.add_argument("part")
    args = parser.parse_args(argv)
    if args.command == "up":
        return stack.up(
            detach=args.detach, with_letta=not args.without_letta, real_node=args.real_node
        )
    if args.command == "down":
        return stack.down()
    if args.command == "status":
        return stack.status()
    if args.command == "restart":
        return stack.restart(args.part)
    if args.command == "env":
        path = stack.env_file()
        if not path.exists():
            print("no running stack (no env file)", file=sys.stderr)
            return 3
        print(path)
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
