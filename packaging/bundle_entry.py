"""The bundle's one program, ``side-audit``: started with a command of the CLI (``demo``,
``report``, ``doctor``, ``--version`` …) it is the CLI; started bare (a double click) or with a
workspace folder or ``--screenshot``, it opens the desktop app. One executable keeps the
bundle's size to one copy of torch and Qt."""

from __future__ import annotations

import sys


def main() -> int:
    from side_audit.cli import command_names
    from side_audit.cli import main as cli_main

    args = sys.argv[1:]
    if args and (args[0] in command_names() or args[0] in ("-h", "--help", "--version")):
        return cli_main(args)
    from side_gui.app import main as gui_main

    return gui_main(args)


if __name__ == "__main__":
    sys.exit(main())
