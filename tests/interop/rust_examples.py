"""How the interop tests start the Rust examples they drive."""

import os
from pathlib import Path


def example_command(package: str, name: str) -> list[str]:
    """The command that runs example `name` of `package`, its own arguments to follow.

    `./scripts/test` builds the examples with the whole workspace and names their directory in
    LATCHKEY_EXAMPLES_DIR, so nothing is compiled a second time with other features; run by
    hand, `cargo run` builds what is missing.
    """
    built = os.environ.get("LATCHKEY_EXAMPLES_DIR")
    if built:
        return [str(Path(built) / name)]
    return ["cargo", "run", "-q", "-p", package, "--example", name, "--"]


def build_command(package: str, name: str) -> list[str] | None:
    """The command that builds example `name` of `package`, or None when it is built already."""
    if os.environ.get("LATCHKEY_EXAMPLES_DIR"):
        return None
    return ["cargo", "build", "-q", "-p", package, "--example", name]
