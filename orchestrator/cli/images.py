"""`dlbench images build | base` and `dlbench sysinfo`: the host's engine and images."""
from __future__ import annotations

import json
import shlex
import sys

from orchestrator.cli.common import printable, say
from orchestrator.errors import DlbenchError


def _docker_client(purpose: str):
    from orchestrator.execution.backends.docker import connect

    client, problem = connect()
    if client is None:
        raise DlbenchError(f"{purpose} needs a Docker engine ({problem})")
    return client


def cmd_images_build(args) -> int:
    from orchestrator import images

    if args.print is not None:
        return print_build_command(args)
    client = _docker_client("building images")
    names = args.frameworks or sorted(images.load_images())
    for name in names:
        images.get_spec(name, args.flavour)  # unknown names fail before anything is built
    options = images.BuildOptions.from_env()
    for name in names:
        say(f"Building {name}/{args.flavour}")
        info = images.ensure_image(client, name, args.flavour, options,
                                   progress=lambda line: say(f"    {line}"), rebuild=args.rebuild)
        say(f"    {info.tag} {info.id}")
    return 0


def print_build_command(args) -> int:
    """--print FRAMEWORK[/FLAVOUR]: the `docker build` command line for that image, built by
    hand from the repository root; builds nothing and needs no engine. What the build would
    lack there (build-inputs/) goes to stderr as comments, so the output stays runnable."""
    from orchestrator import images

    if args.frameworks or args.rebuild:
        raise DlbenchError("--print shows one image's build command and builds nothing; "
                           "give it FRAMEWORK[/FLAVOUR] alone")
    framework, _, flavour = args.print.partition("/")
    flavour = flavour or args.flavour
    images.get_spec(framework, flavour)        # unknown names: the one-line error
    options = images.BuildOptions.from_env(host_pip=True)
    say(shlex.join(images.docker_build_command(framework, flavour, options)))
    for note in images.by_hand_notes(framework, flavour, options):
        print(printable(f"# {note}"), file=sys.stderr)
    return 0


def cmd_images_base(args) -> int:
    from orchestrator import images

    client = _docker_client("importing a base image")
    say(images.make_base_image(client, tag=args.tag))
    return 0


def cmd_sysinfo(args) -> int:
    from orchestrator.execution import sysinfo
    from orchestrator.execution.backends.docker import connect

    client, _ = connect()
    say(json.dumps(sysinfo.collect(client), indent=2).replace("\x7f", "\\u007f"))  # valid JSON, no raw DEL
    return 0


def add_image_commands(sub) -> None:
    p = sub.add_parser("images", help="build the framework images")
    isub = p.add_subparsers(dest="images_command", required=True, help="build or base")
    b = isub.add_parser("build", help="build (or reuse) framework images")
    b.add_argument("frameworks", nargs="*", help="frameworks to build (default: every one)")
    b.add_argument("--flavour", default="cpu", choices=["cpu", "cuda"], help="cpu (default) or cuda")
    b.add_argument("--rebuild", action="store_true", help="build again even when the image is current")
    b.add_argument("--print", metavar="FRAMEWORK[/FLAVOUR]",
                   help="print the `docker build` command line that builds this image from the "
                        "repository root, with every build argument images.yaml gives it; "
                        "builds nothing")
    b.set_defaults(func=cmd_images_build)
    b = isub.add_parser("base", help="make a local Debian Python base image (no registry needed)")
    b.add_argument("--tag", default="local/bookworm-python:3.11",
                   help="tag of the image made (default: local/bookworm-python:3.11)")
    b.set_defaults(func=cmd_images_base)


def add_sysinfo_command(sub) -> None:
    p = sub.add_parser("sysinfo", help="print what system.json records about this host")
    p.set_defaults(func=cmd_sysinfo)
