"""Does every pin in requirements.lock have a wheel for every laptop the course targets?

    python tools/check_platforms.py [--lock FILE] [--index-url URL] [--pip [--only X]]

Targets: macOS 14+ arm64, Windows amd64, Linux x86_64 and aarch64 (glibc 2.28+), each
with CPython 3.11, 3.12 and 3.13 (`TARGETS`). pip evaluates a lock's environment markers
for the machine it runs on, so the markers are evaluated here per target with
`packaging.markers` (at the first and at a late patch release, since markers such as
`python_full_version < '3.11.5'` split a minor version). For each pin that applies, the
index's file list for that release (PEP 691 JSON, what pip reads) is asked for a wheel
whose tags the target supports (`packaging.tags`, as pip computes them for
`--platform ... --python-version ... --implementation cp --abi cpXY`) and whose
requires-python admits the target. Nothing is downloaded or installed.

A release that ships only an sdist and no platform-specific wheel at all is pure Python
that pip builds anywhere: counted as installable and listed as "sdist". A release that
has compiled wheels, but none for a target, is a gap.

--pip also asks pip itself, one `pip install --dry-run --no-deps --only-binary=:all:
--platform ...` per target with every applicable pin (pip then downloads the wheels that
lack PEP 658 metadata, torch and the CUDA libraries among them: gigabytes).

Prints a table (one row per platform, one column per Python) and exits 1 on any gap.
Needs the network; `make check-platforms` runs it (not part of `make test`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags, mac_platforms
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ((3, 11), (3, 12), (3, 13))
LATE_PATCH = 20  # a patch release later than any marker in the lock tells apart


def _manylinux(arch: str, glibc_minor: int = 28) -> list[str]:
    """manylinux platform tags a glibc 2.<glibc_minor> machine accepts, newest first."""
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags = []
    for minor in range(glibc_minor, 4, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        if minor in legacy:
            tags.append(f"{legacy[minor]}_{arch}")
    return tags


@dataclass(frozen=True)
class Platform:
    name: str
    markers: dict  # the marker variables that depend on the OS and CPU
    platforms: tuple  # wheel platform tags it accepts, best first
    pip_platform: str  # what `pip --platform` is given


PLATFORMS = (
    Platform("macOS arm64", {"sys_platform": "darwin", "platform_system": "Darwin",
                             "os_name": "posix", "platform_machine": "arm64"},
             tuple(mac_platforms((14, 0), "arm64")), "macosx_14_0_arm64"),
    Platform("Windows amd64", {"sys_platform": "win32", "platform_system": "Windows",
                               "os_name": "nt", "platform_machine": "AMD64"},
             ("win_amd64",), "win_amd64"),
    Platform("Linux x86_64", {"sys_platform": "linux", "platform_system": "Linux",
                              "os_name": "posix", "platform_machine": "x86_64"},
             tuple(_manylinux("x86_64")), "manylinux_2_28_x86_64"),
    Platform("Linux aarch64", {"sys_platform": "linux", "platform_system": "Linux",
                               "os_name": "posix", "platform_machine": "aarch64"},
             tuple(_manylinux("aarch64")), "manylinux_2_28_aarch64"),
)


def environment(platform: Platform, full_version: str) -> dict:
    """The marker environment of CPython `full_version` on `platform`."""
    major_minor = ".".join(full_version.split(".")[:2])
    return {"implementation_name": "cpython", "implementation_version": full_version,
            "platform_python_implementation": "CPython", "platform_release": "",
            "platform_version": "", "python_full_version": full_version,
            "python_version": major_minor, **platform.markers}


def read_lock(text: str) -> list[Requirement]:
    """The `name==version [; marker]` lines of a lock (comments and options skipped)."""
    reqs = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        req = Requirement(line)
        pins = [s for s in req.specifier if s.operator == "=="]
        if len(pins) != 1:
            raise ValueError(f"lock line {line!r} is not an exact pin (name==version)")
        reqs.append(req)
    return reqs


def pin_version(req: Requirement) -> str:
    return next(iter(req.specifier)).version


def applicable(reqs: list[Requirement], platform: Platform,
               python: tuple[int, int]) -> dict[str, list[tuple[Requirement, str]]]:
    """The pins whose markers hold on `platform` with CPython `python`, evaluated at its
    first and a late patch release: {patch version: [(requirement, that version)]}."""
    out = {}
    for patch in (0, LATE_PATCH):
        full = f"{python[0]}.{python[1]}.{patch}"
        env = environment(platform, full)
        out[full] = [(r, full) for r in reqs
                     if r.marker is None or r.marker.evaluate(env)]
    return out


def supported_tags(platform: Platform, python: tuple[int, int]) -> set[Tag]:
    """The wheel tags pip accepts for `--platform --python-version --implementation cp
    --abi cpXY` (cpython_tags then the py3/none fallbacks), as a set."""
    abi = f"cp{python[0]}{python[1]}"
    plats = list(platform.platforms)
    return (set(cpython_tags(python, abis=[abi], platforms=plats))
            | set(compatible_tags(python, interpreter=abi, platforms=plats)))


def wheel_fits(filename: str, requires_python: str | None, tags: set[Tag],
               full_version: str) -> bool:
    """Does this wheel install on a target with these tags and this Python version?"""
    try:
        _, _, _, wheel_tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return False
    return admits(requires_python, full_version) and not wheel_tags.isdisjoint(tags)


def release_files(index_url: str, name: str, version: str) -> list[dict]:
    """The files the index lists for one release (PEP 691 JSON), yanked ones out."""
    url = f"{index_url.rstrip('/')}/{canonicalize_name(name)}/"
    request = urllib.request.Request(
        url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    want, out = Version(version), []
    for f in files:
        if f.get("yanked"):
            continue
        fn = f["filename"]
        try:
            found = (parse_wheel_filename(fn)[1] if fn.endswith(".whl")
                     else parse_sdist_filename(fn)[1])
        except (InvalidWheelFilename, InvalidSdistFilename):
            continue
        if found == want:
            out.append(f)
    return out


def admits(requires_python: str | None, full_version: str) -> bool:
    """Does a file's requires-python admit this Python (unparsable: yes, as in pip)?"""
    try:
        return not requires_python or SpecifierSet(requires_python).contains(
            full_version, prereleases=True)
    except ValueError:
        return True


def is_pure_sdist_only(files: list[dict], full_version: str) -> bool:
    """Only an sdist (or sdist and `none-any` wheels) for this release, and the sdist
    admits this Python: pure Python that pip builds anywhere."""
    wheels = [f for f in files if f["filename"].endswith(".whl")]
    has_sdist = any(not f["filename"].endswith(".whl")
                    and admits(f.get("requires-python"), full_version) for f in files)
    return has_sdist and all(f["filename"].endswith("-none-any.whl") for f in wheels)


def check(reqs: list[Requirement], index_url: str):
    """{(platform name, python): (n pins, [missing 'name==version'], [sdist])}."""
    keys = sorted({(canonicalize_name(r.name), pin_version(r)) for r in reqs})
    with ThreadPoolExecutor(8) as pool:
        files = dict(zip(keys, pool.map(lambda k: release_files(index_url, *k), keys)))
    table = {}
    for platform in PLATFORMS:
        for python in PYTHONS:
            tags = supported_tags(platform, python)
            missing, sdist, names = [], [], set()
            for pairs in applicable(reqs, platform, python).values():
                for req, full in pairs:
                    key = (canonicalize_name(req.name), pin_version(req))
                    names.add(key)
                    listed = files[key]
                    if any(wheel_fits(f["filename"], f.get("requires-python"), tags,
                                      full) for f in listed):
                        continue
                    pin = f"{req.name}=={key[1]}"
                    if is_pure_sdist_only(listed, full):
                        sdist.append(pin)
                    elif pin not in missing:
                        missing.append(pin)
            table[(platform.name, python)] = (len(names), missing, sorted(set(sdist)))
    return table


def pip_check(reqs: list[Requirement], index_url: str, platform: Platform,
              python: tuple[int, int], skip: set[str]) -> str | None:
    """Ask pip itself (dry run, no deps, wheels only), once per distinct set of pins
    (a minor version's patch releases may differ); None when it finds them all."""
    abi, problems, asked = f"cp{python[0]}{python[1]}", [], set()
    for full, pairs in applicable(reqs, platform, python).items():
        pins = frozenset(f"{r.name}=={pin_version(r)}" for r, _ in pairs) - skip
        if pins in asked:
            continue
        asked.add(pins)
        with tempfile.TemporaryDirectory() as target:
            cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run",
                   "--disable-pip-version-check", "--no-cache-dir",
                   "--ignore-installed", "--no-deps", "--only-binary=:all:",
                   "--platform", platform.pip_platform,
                   "--python-version", full, "--implementation", "cp", "--abi", abi,
                   "--target", target, "--index-url", index_url, *sorted(pins)]
            env = dict(os.environ, PIP_CONFIG_FILE=os.devnull)  # not local mirrors
            done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                  check=False)
        if done.returncode:
            found = re.findall(r"No matching distribution found for (\S+)", done.stderr)
            errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
            problems.append(f"Python {full}: "
                            + (", ".join(found) or (errors or ["pip failed"])[-1]))
    return "; ".join(problems) or None


def format_table(table: dict) -> str:
    width = max(len(p.name) for p in PLATFORMS)
    columns = "  ".join(f"{f'Python {py[0]}.{py[1]}':<22}" for py in PYTHONS)
    head = f"{'':{width}}  {columns}"
    lines = [head, "-" * len(head)]
    for platform in PLATFORMS:
        cells = []
        for python in PYTHONS:
            n, missing, _ = table[(platform.name, python)]
            verdict = f"MISSING {len(missing)}" if missing else "ok"
            cells.append(f"{verdict} ({n} pins)")
        row = "  ".join(f"{c:<22}" for c in cells)
        lines.append(f"{platform.name:{width}}  {row}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    parser.add_argument("--index-url", default="https://pypi.org/simple")
    parser.add_argument("--pip", action="store_true",
                        help="also ask pip itself per target (downloads gigabytes)")
    parser.add_argument("--only", default="", metavar="X",
                        help="--pip only for platforms whose name contains X "
                             "(e.g. macOS, Windows)")
    args = parser.parse_args(argv)
    reqs = read_lock(args.lock.read_text(encoding="utf-8"))
    table = check(reqs, args.index_url)
    print(f"{args.lock.name}: {len(reqs)} pins; wheels on {args.index_url}\n")
    print(format_table(table))
    gaps = 0
    for (name, python), (_, missing, sdist) in table.items():
        where = f"{name}, Python {python[0]}.{python[1]}"
        if missing:
            gaps += 1
            print(f"\nno wheel for {where}: {', '.join(missing)}")
        if sdist:
            print(f"\npure-Python sdist only (pip builds it) for {where}: "
                  f"{', '.join(sdist)}")
    if args.pip:
        print("\npip install --dry-run --no-deps --only-binary=:all: per target:")
        for platform in [p for p in PLATFORMS if args.only.lower() in p.name.lower()]:
            for python in PYTHONS:
                skip = set(table[(platform.name, python)][2])
                problem = pip_check(reqs, args.index_url, platform, python, skip)
                gaps += problem is not None
                print(f"  {platform.name}, Python {python[0]}.{python[1]}: "
                      f"{'ok' if problem is None else 'FAILS: ' + problem}", flush=True)
    targets = len(PLATFORMS) * len(PYTHONS)
    print(f"\n{'all' if not gaps else 'NOT all'} {targets} targets installable"
          + (f": {gaps} with gaps" if gaps else ""))
    return 1 if gaps else 0


if __name__ == "__main__":
    sys.exit(main())
