"""``mboard`` and ``python -m mboard``: the command line.

Loading it takes a moment (gRPC, protobuf, click); Ctrl+C meanwhile ends it as quietly as
Ctrl+C later does, not with a traceback from whatever module was being imported.
"""

import sys


def main() -> None:
    try:
        from mboard.cli import main as cli_main
    except KeyboardInterrupt:
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
