#!/usr/bin/env python3
"""The crate's `rust-version` is honest: no lower than what any of its (normal, all-features)
dependencies declares, and equal to the highest of them unless a reason is given below.

A toolchain of that version cannot be fetched on the CI machine, so the rest is checked by
clippy's `incompatible_msrv` lint (run with -D warnings in .ci/run): it reads `rust-version` and
rejects std APIs stabilised after it.
"""
import json
import subprocess
import sys


def version(v):
    return tuple(int(x) for x in v.split("."))[:3] + (0,) * (3 - len(v.split(".")))


# the platform CI builds for (target-specific dependencies of others, wasm's say, are not built)
host = next(
    line.split()[1]
    for line in subprocess.check_output(["rustc", "-vV"], text=True).splitlines()
    if line.startswith("host:")
)
meta = json.loads(
    subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--all-features", "--locked",
         "--filter-platform", host]
    )
)
root_id = meta["resolve"]["root"]
packages = {p["id"]: p for p in meta["packages"]}
ours = packages[root_id]["rust_version"]
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}

# normal and build dependencies of the library, transitively (no dev-dependencies)
seen, todo = set(), [root_id]
while todo:
    node = nodes[todo.pop()]
    for dep in node["deps"]:
        normal = any(k["kind"] in (None, "normal", "build") for k in dep["dep_kinds"])
        if normal and dep["pkg"] not in seen:
            seen.add(dep["pkg"])
            todo.append(dep["pkg"])

needs = sorted(
    ((version(packages[i]["rust_version"]), packages[i]["name"], packages[i]["version"])
     for i in seen if packages[i].get("rust_version")),
    reverse=True,
)
highest = needs[0]
print(f"rust-version {ours}; the highest a dependency declares: {highest[1]} {highest[2]} "
      f"needs {'.'.join(map(str, highest[0][:2]))}")
if version(ours) < highest[0]:
    sys.exit(f"rust-version {ours} is lower than {highest[1]} {highest[2]} needs")
if version(ours)[:2] > highest[0][:2]:
    sys.exit(f"rust-version {ours} is higher than any dependency needs: lower it, or say why")
