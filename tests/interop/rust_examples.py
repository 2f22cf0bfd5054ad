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
