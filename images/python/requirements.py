"""Print the requirements of pyproject.toml, one a line, for `pip install -r`.

The image build installs these before it copies the source, so the dependency layer is rebuilt
only when pyproject.toml changes. Printed: the build system's requirements (the package itself is
then installed offline, without build isolation), the project's dependencies, and those of each
extra named on the command line (an extra that names the project itself, ``warren[api]``, is
expanded in place).

    python requirements.py pyproject.toml [EXTRA ...]
"""

from __future__ import annotations

import re
import sys
import tomllib
from typing import Any


def requirements(pyproject: dict[str, Any], extras: list[str]) -> list[str]:
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    self_reference = re.compile(rf"^{re.escape(project['name'])}\[(?P<extras>[^\]]+)\]$")
    wanted: list[str] = [*pyproject["build-system"]["requires"], *project.get("dependencies", [])]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"requirements.py: no extra {extra!r} in pyproject.toml (have: {', '.join(optional)})")
        seen.add(extra)
        for requirement in optional[extra]:
            if match := self_reference.match(requirement.replace(" ", "")):
                pending.extend(match["extras"].split(","))
            else:
                wanted.append(requirement)
    return list(dict.fromkeys(wanted))


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    with open(argv[0], "rb") as f:
        pyproject = tomllib.load(f)
    print("\n".join(requirements(pyproject, [e for arg in argv[1:] for e in arg.split(",") if e])))


if __name__ == "__main__":
    main(sys.argv[1:])
