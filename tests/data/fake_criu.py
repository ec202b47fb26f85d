"""A stand-in for the criu binary, for `crmodel replay --criu` tests (no CRIU is built here).

Run as `criu dump ...` or `criu restore ...`; it appends its argv to $FAKE_CRIU_LOG (if set)
and behaves as $FAKE_CRIU says:
  identity      dump leaves the tree running; restore "restores" it: writes its root pid to
                the pid file (a CRIU that gives back exactly what was there)
  refuse        dump fails as CRIU does on an external socket
  fail-restore  dump as identity, restore fails
  no-pidfile    dump and restore succeed, no pid file is written
"""

import json
import os
import sys


def arg(argv, name):
    return argv[argv.index(name) + 1]


def main():
    argv = sys.argv[1:]
    if os.environ.get("FAKE_CRIU_LOG"):
        with open(os.environ["FAKE_CRIU_LOG"], "a") as f:
            f.write(json.dumps(argv) + "\n")
    mode = os.environ.get("FAKE_CRIU", "identity")
    images = arg(argv, "-D")
    log = os.path.join(images, arg(argv, "-o"))
    if argv[0] == "dump":
        if mode == "refuse":
            with open(log, "w") as f:
                f.write("(00.001) Error (criu/sk-unix.c:1): External socket is used\n")
            return 1
        with open(os.path.join(images, "root"), "w") as f:
            f.write(arg(argv, "-t"))
        return 0
    if argv[0] == "restore":
        if mode == "fail-restore":
            with open(log, "w") as f:
                f.write("(00.002) Error (criu/cr-restore.c:1): Restoring FAILED.\n")
            return 1
        if mode != "no-pidfile":
            with open(os.path.join(images, "root")) as f, open(arg(argv, "--pidfile"), "w") as g:
                g.write(f.read() + "\n")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
