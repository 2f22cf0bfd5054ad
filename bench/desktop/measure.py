#!/usr/bin/env python3
"""Idle memory and cold start of the Latchkey desktop app beside an empty Tauri 2 app, measured in
the same run (bench/desktop.sh sets up Xvfb, a D-Bus session with gnome-keyring, tauri-driver).

- Cold start: from asking tauri-driver for a session (which launches the app) to the first
  interactive element on screen (Latchkey: the sidebar of a workspace on this computer, with its
  embedded broker; the empty app: its one paragraph).
- Idle memory: after the window has been idle a few seconds, the proportional set size (PSS,
  /proc/<pid>/smaps_rollup) of the app and every process under it (WebKit's web and network
  processes), so shared pages are counted once.
"""
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "e2e"))
from desktop import Driver, Failure  # noqa: E402

IDLE_SECONDS = float(os.environ.get("LATCHKEY_BENCH_IDLE", "5"))


def children() -> dict:
    tree: dict = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def app_pid(binary: str):
    real = os.path.realpath(binary)
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.path.realpath(entry / "exe") == real:
                    return int(entry.name)
            except OSError:
                pass
    return None


def pss_mb(root: int) -> float:
    tree, total, todo = children(), 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, []))
        try:
            for line in pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def ready(d: Driver, css: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.find_all(css):
            return
        time.sleep(0.02)
    raise Failure(f"{css} did not appear within {timeout}s")


def measure(name: str, binary: str, css: str, driver: str, shots: pathlib.Path) -> tuple:
    """One cold start of `binary` and its idle memory afterwards: (milliseconds, MB)."""
    began = time.monotonic()
    d = Driver(driver, binary, shots)
    try:
        ready(d, css)
        start = (time.monotonic() - began) * 1000
        time.sleep(IDLE_SECONDS)
        pid = app_pid(binary)
        if pid is None:
            raise Failure(f"{name}: no process runs {binary}")
        memory = pss_mb(pid)
    finally:
        d.quit()
    for _ in range(100):
        if app_pid(binary) is None:
            break
        time.sleep(0.1)
    return start, memory


def set_up_latchkey(binary: str, driver: str) -> None:
    """One unmeasured run: a workspace on this computer, so measured runs start its broker."""
    d = Driver(driver, binary, pathlib.Path(tempfile.mkdtemp()))
    t = d.tid
    try:
        d.click(t("start-create"), "create a workspace")
        d.fill(t("workspace-name"), "Bench", "workspace name")
        d.fill(t("member-name"), "Ada", "name")
        d.click(t("create-workspace"), "create")
        d.click(t("onboarding-done"), "skip the kit")
        d.wait(t("nav-integrations"), "the sidebar")
    finally:
        d.quit()
    time.sleep(1)


def main() -> None:
    driver = os.environ["LATCHKEY_E2E_DRIVER"]
    app, empty = sys.argv[1], sys.argv[2]
    rounds = int(os.environ.get("LATCHKEY_BENCH_ROUNDS", "5"))
    set_up_latchkey(app, driver)
    # The two apps take turns, so a change in the machine's speed during the run (another
    # process, CPU frequency) falls on both alike.
    shots = pathlib.Path(tempfile.mkdtemp())
    samples: dict = {"empty": [], "latchkey": []}
    for _ in range(rounds):
        samples["empty"].append(measure("empty", empty, "#ready", driver, shots))
        samples["latchkey"].append(
            measure("latchkey", app, '[data-testid="nav-integrations"]', driver, shots))
    median = lambda name, i: statistics.median(s[i] for s in samples[name])  # noqa: E731
    empty_start, empty_mb = median("empty", 0), median("empty", 1)
    app_start, app_mb = median("latchkey", 0), median("latchkey", 1)
    print(f"\ndesktop app, median of {rounds} (idle {IDLE_SECONDS:.0f} s before measuring memory)")
    print(f"{'':24}{'cold start ms':>15}{'idle PSS MB':>14}")
    print(f"{'empty Tauri 2 app':24}{empty_start:>15.0f}{empty_mb:>14.1f}")
    print(f"{'Latchkey':24}{app_start:>15.0f}{app_mb:>14.1f}")
    print(f"{'ratio':24}{app_start / empty_start:>14.2f}x{app_mb / empty_mb:>13.2f}x")
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    print(f"targets: memory <= 1.3x the empty app: {verdict(app_mb <= 1.3 * empty_mb)}; "
          f"<= 150 MB in total: {verdict(app_mb <= 150)}; "
          f"cold start <= 1.3x: {verdict(app_start <= 1.3 * empty_start)}")


if __name__ == "__main__":
    try:
        main()
    except Failure as failure:
        sys.exit(f"desktop bench failed: {failure}")
