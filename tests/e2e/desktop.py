#!/usr/bin/env python3
"""The desktop app end to end: the real app (tauri-driver + WebKitWebDriver) with its embedded
broker, the real Secret Service, oidc-provider on loopback and a recording upstream.

Started by tests/stories/desktop.sh inside Xvfb and a private D-Bus session with an unlocked
gnome-keyring, a tray host and a notification server (tests/e2e/desktop_hosts.py). Walks the
product as a person would: create a workspace on this computer, add an API key, connect an OAuth
integration in the "browser", create an agent, close the window (the app stays in the tray) and
open it again from the tray, make the agent's call wait for approval, see the notification and
the request in the tray's menu, open it from the tray and approve it in the app, see the upstream
receive the credential and the audit log record it, rotate keys with the button, let a second
device join from the terminal (the real `latchkey` CLI, its own profile in the same keychain)
with an invite made in the app, admit it there and see it use the workspace key, see its refused
attempt at an admin's action in the audit log, revoke an invite not needed, disconnect, quit
from the tray; then, with the tray host stopped, start the app again and see closing its window
quit it. Saves a screenshot of every screen, then scans every file the app and the CLI wrote,
and every notification, for the canary key.

Standard library only: WebDriver is plain JSON over HTTP; the tray, the notifications and the
window's close button are read and worked through desktop_hosts.py, run as a command.
"""
import http.client
import http.server
import json
import os
import pathlib
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

CANARY = "sk-e2e-canary-4b1d9f0e7c2a5d83"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
TIMEOUT = 30


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"desktop story: {name} is not set (run tests/stories/desktop.sh)")
    return value


class Failure(Exception):
    pass


class Stale(Failure):
    """WebKitWebDriver lost an element the page re-rendered while it was being looked at (e.g. the
    whole screen when the tray pauses the agents); a wait looks again."""


class Recorder(http.server.BaseHTTPRequestHandler):
    """The upstream API: records what it received, answers a small JSON body."""

    seen: list = []

    def handle_one(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        Recorder.seen.append({"method": self.command, "path": self.path,
                              "headers": {k.lower(): v for k, v in self.headers.items()},
                              "body": body})
        payload = json.dumps({"ok": True, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = handle_one

    def log_message(self, *args) -> None:
        pass


class Driver:
    """A WebDriver session on tauri-driver."""

    def __init__(self, base: str, app: str, shots: pathlib.Path):
        self.base, self.shots = base.rstrip("/"), shots
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "wry", "tauri:options": {"application": app}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        # tauri-driver drops the first requests of a new session while the app's window loads:
        # a connection closed without an answer is retried, briefly.
        for attempt in range(20):
            request = urllib.request.Request(self.base + path, data=data, method=method,
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return json.loads(response.read() or b"{}").get("value")
            except urllib.error.HTTPError as error:
                detail = json.loads(error.read() or b"{}").get("value", {})
                kind = Stale if detail.get("error") == "stale element reference" else Failure
                raise kind(f"{method} {path}: {detail.get('error')}: {detail.get('message')}")
            except (ConnectionError, http.client.RemoteDisconnected) as error:
                if attempt == 19:
                    raise Failure(f"{method} {path}: the driver went away: {error}")
                time.sleep(0.25)

    def s(self, path: str, body=None, method: str = "POST"):
        return self.call(method, f"/session/{self.session}{path}", body)

    def find_all(self, css: str) -> list:
        found = self.s("/elements", {"using": "css selector", "value": css})
        return [e[ELEMENT] for e in found]

    def wait(self, css: str, what: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                for element in self.find_all(css):
                    if self.s(f"/element/{element}/displayed", method="GET"):
                        return element
            except Stale:
                pass
            time.sleep(0.2)
        self.screenshot(f"failed-{css.replace('[', '').replace(']', '').replace('=', '-')}")
        raise Failure(f"{what}: nothing visible matches {css} after {timeout}s")

    def wait_gone(self, css: str, what: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self.find_all(css):
                    return
            except Stale:
                pass
            time.sleep(0.2)
        raise Failure(f"{what}: {css} is still shown after {timeout}s")

    def wait_text(self, css: str, needle: str, what: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            try:
                text = " | ".join(self.text(e) for e in self.find_all(css))
            except Stale:
                text = ""
            if needle in text:
                return text
            time.sleep(0.3)
        raise Failure(f"{what}: {needle!r} not in {css} after {timeout}s (it shows {text!r})")

    def text(self, element: str) -> str:
        return self.s(f"/element/{element}/text", method="GET") or ""

    def choose(self, css: str, label: str, what: str) -> None:
        """Selects the option of the <select> at `css` whose text starts with `label`."""
        options = self.find_all(f"{css} option")
        for option in options:
            if self.text(option).startswith(label):
                self.s(f"/element/{option}/click", {})
                return
        raise Failure(f"{what}: no option starting with {label!r} in "
                      f"{[self.text(o) for o in options]}")

    def property(self, css: str, name: str):
        element = self.wait(css, f"the element whose {name} is read")
        return self.s(f"/element/{element}/property/{name}", method="GET")

    def attribute(self, css: str, name: str) -> str:
        element = self.wait(css, f"the element whose {name} is read")
        return self.s(f"/element/{element}/attribute/{name}", method="GET") or ""

    def click(self, css: str, what: str) -> None:
        self.s(f"/element/{self.wait(css, what)}/click", {})

    def fill(self, css: str, value: str, what: str) -> None:
        element = self.wait(css, what)
        self.s(f"/element/{element}/clear", {})
        self.s(f"/element/{element}/value", {"text": value})

    def tid(self, testid: str) -> str:
        return f'[data-testid="{testid}"]'

    def screenshot(self, name: str) -> None:
        # Notifications dismissed first: they would cover the screen being documented.
        for button in self.find_all('[data-testid="toast"] button'):
            try:
                self.s(f"/element/{button}/click", {})
            except Failure:
                pass
        # The X screen, not WebDriver's screenshot: WebKitGTK takes those from its compositor,
        # which the app turns off. Xvfb has no window manager, so the window sits at the origin.
        time.sleep(0.3)
        shot = subprocess.run(
            ["import", "-display", os.environ.get("DISPLAY", ":99"), "-window", "root",
             "-crop", "1100x720+0+0", str(self.shots / f"{name}.png")],
            capture_output=True, text=True, timeout=30, check=False)
        if shot.returncode != 0:
            print(f"desktop story: no screenshot {name}: {shot.stderr.strip()}", file=sys.stderr)

    def quit(self) -> None:
        try:
            self.call("DELETE", f"/session/{self.session}")
        except Exception:
            pass


class Desktop:
    """The tray host, the notification server and the window manager (desktop_hosts.py)."""

    TITLE = "Latchkey"

    def __init__(self):
        self.python = env("LATCHKEY_E2E_HOSTS_PYTHON")
        self.script = str(pathlib.Path(__file__).with_name("desktop_hosts.py"))
        self.log = pathlib.Path(env("LATCHKEY_E2E_NOTIFICATIONS"))

    def run(self, *args: str) -> str:
        done = subprocess.run([self.python, self.script, *args], capture_output=True, text=True,
                              timeout=30, check=False)
        if done.returncode != 0:
            raise Failure(f"desktop_hosts.py {args[0]}: {done.stderr.strip()}")
        return done.stdout

    def items(self) -> list:
        return json.loads(self.run("items"))

    def menu(self) -> list:
        """The tray menu's visible entries, separators left out."""
        return [e for e in json.loads(self.run("menu"))
                if e["visible"] and e["type"] != "separator"]

    def entry(self, menu: list, label: str) -> dict:
        for entry in menu:
            if entry["label"] == label:
                return entry
        raise Failure(f"the tray menu has no {label!r}: {[e['label'] for e in menu]}")

    def click(self, entry: dict) -> None:
        self.run("click", str(entry["id"]))

    def window(self) -> str:
        return self.run("window", self.TITLE).strip()

    def close_window(self) -> None:
        self.run("close-window", self.TITLE)

    def stop_hosts(self) -> None:
        """Ends the tray host and the notification server, as on a desktop without them."""
        os.kill(int(env("LATCHKEY_E2E_HOSTS_PID")), signal.SIGTERM)
        until("the tray host leaves the bus", lambda: (self.gone(), "still there"))

    def gone(self) -> bool:
        try:
            self.items()
        except Failure:
            return True
        return False

    def notifications(self) -> list:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def badge(self, item: dict) -> bool:
        """Whether the icon the tray shows carries the red "requests waiting" dot (drawn at the
        top right of the 32 x 32 icon; src-tauri/tray.rs, `with_badge`)."""
        icon = item["props"].get("IconName", "")
        if not icon.endswith(".png"):
            raise Failure(f"the tray icon is not an image file: {icon!r}")
        done = subprocess.run(["convert", icon, "-format", "%[hex:p{24,7}]", "info:"],
                              capture_output=True, text=True, timeout=30, check=False)
        return done.returncode == 0 and done.stdout.upper().startswith("E53E3E")


def until(what: str, probe, timeout: float = TIMEOUT):
    """Polls `probe` (returning `(done, seen)`) until it is done; fails saying `what` was expected
    and what was seen last."""
    deadline = time.monotonic() + timeout
    seen = None
    while True:
        try:
            done, seen = probe()
        except Failure as failure:
            done, seen = False, str(failure)
        if done:
            return seen
        if time.monotonic() > deadline:
            raise Failure(f"{what}: not after {timeout}s; last seen: {seen!r}")
        time.sleep(0.2)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its parent does not)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def listening(url: str) -> bool:
    """Whether something accepts connections at `url`'s host and port."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), 0.5).close()
        return True
    except OSError:
        return False


def add_api_key(d: Driver, name: str, key: str, base_url: str) -> None:
    """Adds an API key for a custom API through Connect, as a member types it, and waits for its
    card."""
    t = d.tid
    d.click(t("connect-integration"), "connect button")
    d.fill(t("provider-search"), "custom api", "provider search")
    d.click(t("provider-custom-api-key"), "the custom API key provider")
    d.fill(t("integration-name"), name, "integration name")
    d.fill(t("api-key"), key, "API key field")
    d.fill(t("base-url"), base_url, "base URL")
    d.click(t("connect-submit"), "add the key")
    d.wait(t(f"integration-{name}"), "the new integration's card")


def create_agent(d: Driver, name: str, broker: str, shot: str = "") -> str:
    """Creates an agent on the Agents screen and returns the token its dialog shows once, after
    checking the SDK snippets point at `broker`; closes the dialog."""
    t = d.tid
    d.click(t("nav-agents"), "agents in the sidebar")
    d.click(t("create-agent"), "create agent")
    d.fill(t("agent-name"), name, "agent name")
    d.click(t("create-agent-submit"), "create")
    token = d.text(d.wait(t("agent-token"), "the token dialog"))
    if not token.startswith("lk_"):
        raise Failure(f"the dialog does not show an agent token: {token!r}")
    snippet = d.text(d.wait(t("snippet-text"), "SDK snippets"))
    if broker not in snippet:
        raise Failure(f"the snippet does not point at the broker {broker}: {snippet!r}")
    if shot:
        d.screenshot(shot)
    d.click(t("token-done"), "close the token dialog")
    return token


def recording_upstream() -> tuple:
    """The upstream API on a free loopback port, recording into `Recorder.seen`: the server (to
    shut down) and its base URL."""
    upstream = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Recorder)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    return upstream, f"http://127.0.0.1:{upstream.server_address[1]}"


def scan_for(canary: str, roots: list, what: str = "the canary key") -> None:
    """Fails naming every file under `roots` (directories, or files themselves) holding `canary`."""
    if not canary:
        raise Failure(f"nothing to scan for: {what} was never read")
    leaks = [str(path) for root in roots
             for path in (root.rglob("*") if root.is_dir() else [root])
             if path.is_file() and canary.encode() in path.read_bytes()]
    if leaks:
        raise Failure(f"{what} is in {leaks}")


def labels(menu: list) -> list:
    return [e["label"] for e in menu]


def step(title: str) -> None:
    print(f"desktop story: {title}", flush=True)


def agent_call(broker: str, credential: str, token: str, results: list, capability: str = "",
               wait: int = 60) -> None:
    """An agent's GET of /v1/hello?state=open; appends (status, body, the `Latchkey-Capability`
    header of the answer) to `results`."""
    headers = {"Authorization": f"Bearer {token}", "Prefer": f"wait={wait}"}
    if capability:
        headers["Latchkey-Capability"] = capability
    request = urllib.request.Request(f"{broker}/p/{credential}/v1/hello?state=open",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=90) as response:
            results.append((response.status, response.read().decode(),
                            response.headers.get("Latchkey-Capability", "")))
    except urllib.error.HTTPError as error:
        results.append((error.code, error.read().decode(), ""))


def make_member_invite(d: "Driver", what: str) -> str:
    """Makes a member invite on the Members screen and returns its code, shown once."""
    t = d.tid
    d.click(t("nav-members"), "members in the sidebar")
    d.click(t("invite"), "invite on the members screen")
    d.click(t("create-invite"), "create a member invite")
    code = d.text(d.wait(t("invite-code"), what))
    d.click(t("invite-done"), "close the invite dialog")
    return code


def latchkey(args: list, stdin: str = "", profile: str = "e2e-cli",
             config: str = "LATCHKEY_E2E_CLI_CONFIG") -> dict:
    """The `latchkey` CLI of another device: its own profile and configuration directory (named
    by the environment variable `config`), the keychain the app uses. Returns its `--json`
    answer."""
    done = run_latchkey(args, stdin, profile, config)
    if done.returncode != 0:
        raise Failure(f"latchkey {' '.join(args[:2])} failed ({done.returncode}): "
                      f"{done.stderr.strip()}")
    return json.loads(done.stdout)


def latchkey_refused(args: list, profile: str = "e2e-cli",
                     config: str = "LATCHKEY_E2E_CLI_CONFIG") -> str:
    """Runs the CLI as `latchkey` does and returns its error message; fails if it succeeded."""
    done = run_latchkey(args, "", profile, config)
    if done.returncode == 0:
        raise Failure(f"latchkey {' '.join(args[:2])} succeeded where it must be refused: "
                      f"{done.stdout.strip()}")
    return done.stderr.strip()


def run_latchkey(args: list, stdin: str, profile: str, config: str):
    cli_env = dict(os.environ, LATCHKEY_PROFILE=profile, LATCHKEY_CONFIG_DIR=env(config),
                   LATCHKEY_KEY_STORE="os")
    return subprocess.run([env("LATCHKEY_E2E_CLI"), "--json", *args], input=stdin, env=cli_env,
                          capture_output=True, text=True, timeout=60, check=False)


def main() -> None:
    app = env("LATCHKEY_E2E_APP")
    driver_url = env("LATCHKEY_E2E_DRIVER")
    broker = "http://" + env("LATCHKEY_DESKTOP_BROKER_LISTEN")
    issuer, client_id = env("LATCHKEY_E2E_ISSUER"), env("LATCHKEY_E2E_CLIENT_ID")
    shots = pathlib.Path(env("LATCHKEY_E2E_SCREENSHOTS"))
    shots.mkdir(parents=True, exist_ok=True)
    scanned = [pathlib.Path(p) for p in env("LATCHKEY_E2E_SCAN").split(":")]

    upstream, upstream_url = recording_upstream()

    d = Driver(driver_url, app, shots)
    t = d.tid
    desk = Desktop()
    try:
        step("tray: the app's icon registers with the tray host")
        tray = until("the app registers its tray icon (a StatusNotifierItem) with the watcher",
                     lambda: (len(i := desk.items()) == 1, i), 15)
        app_pid = tray[0]["pid"]
        until("before set-up the tray menu only opens the app and quits it",
              lambda: (labels(m := desk.menu()) == ["Open Latchkey", "Quit Latchkey"], m))

        step("onboarding: create a workspace on this computer")
        d.click(t("start-create"), "the welcome screen offers to create a workspace")
        d.click(t("where-local"), "this computer is a choice")
        d.fill(t("workspace-name"), "Acme", "workspace name field")
        d.fill(t("member-name"), "Ada", "your name field")
        d.fill(t("device-name"), "e2e-laptop", "device name field")
        d.screenshot("onboarding")
        d.click(t("create-workspace"), "create button")
        fingerprint = d.text(d.wait(t("fingerprint"), "the new device's fingerprint is shown"))
        if len(fingerprint.replace("-", "").strip()) < 16:
            raise Failure(f"the fingerprint shown is not one: {fingerprint!r}")
        d.fill(t("kit-pass1"), "correct horse battery staple e2e", "recovery kit passphrase")
        d.fill(t("kit-pass2"), "correct horse battery staple e2e", "recovery kit passphrase again")
        d.click(t("export-kit"), "save the recovery kit")
        kit = d.text(d.wait(t("kit-path"), "the kit's path is shown"))
        d.screenshot("onboarding-done")
        d.click(t("onboarding-done"), "open the app")
        d.wait(t("nav-integrations"), "the app opens after onboarding")
        kit_file = pathlib.Path(kit[kit.find("/"):].strip())
        if not kit_file.is_file() or CANARY in kit_file.read_text():
            raise Failure(f"the recovery kit is not where the app says: {kit!r}")

        step("integrations: add an API key (custom API, the recording upstream)")
        d.click(t("nav-integrations"), "integrations in the sidebar")
        add_api_key(d, "upstream", CANARY, upstream_url)

        step("integrations: connect OAuth at oidc-provider through the browser")
        d.click(t("connect-integration"), "connect button")
        d.fill(t("provider-search"), "custom oauth", "provider search")
        d.click(t("provider-custom-oauth2"), "the custom OAuth provider")
        d.fill(t("integration-name"), "idp", "integration name")
        d.fill(t("issuer"), issuer, "issuer")
        d.fill(t("base-url"), upstream_url, "API base URL")
        d.fill(t("client-id"), client_id, "client id")
        d.fill(t("scopes"), "openid offline_access", "scopes")
        d.click(t("connect-submit"), "connect")
        d.wait(t("integration-idp"), "the OAuth integration's card after the browser signed in", 60)
        d.screenshot("integrations")
        d.wait_text(f'{t("integration-idp")} {t("integration-account")}', "ada",
                    "the card names the account signed in with (the ID token's subject)")
        d.click(f'{t("integration-idp")} {t("edit-account")}', "edit the idp card's account name")
        d.fill(f'{t("integration-idp")} {t("account-input")}', "ada@idp.example", "account name")
        d.click(f'{t("integration-idp")} {t("save-account")}', "save the account name")
        d.wait_text(f'{t("integration-idp")} {t("integration-account")}', "ada@idp.example",
                    "the broker stored the name given on the card")

        step("agents: create one; its token is shown once")
        token = create_agent(d, "e2e-bot", broker, "agent-token")
        d.wait_gone(t("agent-token"), "the token leaves the screen")
        d.wait(t("agent-e2e-bot"), "the agent's card")
        d.screenshot("agents")

        step("tray: closing the window keeps the app in the tray; Open Latchkey shows it again")
        menu = until("once set up the tray menu says nothing waits and offers pause",
                     lambda: ("No requests waiting" in labels(m := desk.menu()), m))
        for label in ("Open Latchkey", "Pause all agents", "Quit Latchkey"):
            desk.entry(menu, label)
        desk.close_window()
        until("closing the window with a tray host present hides it (the app lives in the tray)",
              lambda: ((w := desk.window()) == "unmapped", w))
        if not alive(app_pid) or [i["pid"] for i in desk.items()] != [app_pid]:
            raise Failure("closing the window ended the app or took its tray icon away")
        desk.click(desk.entry(desk.menu(), "Open Latchkey"))
        until("Open Latchkey in the tray menu shows the window again",
              lambda: ((w := desk.window()) == "viewable", w))
        d.wait(t("agent-e2e-bot"), "the window shows the screen it was closed on")
        desk.close_window()
        until("closing the window again hides it", lambda: ((w := desk.window()) == "unmapped", w))

        step("approvals: the agent's call waits; approve it in the app")
        results: list = []
        call = threading.Thread(target=agent_call, args=(broker, "upstream", token, results))
        call.start()

        def announced():
            notes = desk.notifications()
            mine = [n for n in notes if "e2e-bot" in n["body"] and "upstream" in n["body"]]
            return bool(mine), mine or notes

        note = until("a notification announces the held call, naming the agent and integration",
                     announced)[0]
        if note["summary"] != "An agent asks for approval" or "/v1/hello" not in note["body"]:
            raise Failure(f"the notification does not say what waits: {note}")
        if "=open" in note["summary"] + note["body"]:
            raise Failure(f"the notification shows a query value; only the path may: {note}")
        menu = until("the tray menu lists the held call under its count",
                     lambda: ("1 request waiting" in labels(m := desk.menu()), m))
        pending = [e for e in menu if e["label"].startswith("e2e-bot: GET 127.0.0.1")]
        if len(pending) != 1 or not pending[0]["label"].endswith("/v1/hello via upstream") \
                or not pending[0]["enabled"]:
            raise Failure(f"the tray menu does not list the request as one item: {labels(menu)}")
        for label in ("Open Latchkey", "Pause all agents", "Quit Latchkey"):
            desk.entry(menu, label)
        # The menu, the label and the icon are set one after the other: each is waited for.
        until("the count (1) beside the tray icon and the badge in it",
              lambda: ((i := desk.items()[0])["props"].get("XAyatanaLabel") == "1"
                       and desk.badge(i), i["props"]))
        # A click on the request in the tray opens the window on that request.
        desk.click(pending[0])
        until("a click on the request in the tray menu shows the window",
              lambda: ((w := desk.window()) == "viewable", w))
        detail = d.wait_text(t("approval-detail"), "/v1/hello",
                             "a click on the request in the tray opens it in the window")
        for shown in ("e2e-bot", "GET", "127.0.0.1", "state"):
            if shown not in detail:
                raise Failure(f"the approval does not show {shown!r}: {detail!r}")
        if "state=open" in detail or "=open" in detail:
            raise Failure("the approval shows a query value; only names may be shown")
        d.screenshot("approvals")
        d.click(t("approve-once"), "approve once")
        call.join(60)
        if not results or results[0][0] != 200:
            raise Failure(f"the approved call did not go through: {results}")
        if CANARY in results[0][1]:
            raise Failure("the agent saw the credential")
        hits = [r for r in Recorder.seen if r["path"].startswith("/v1/hello")]
        if len(hits) != 1 or hits[0]["headers"].get("authorization") != f"Bearer {CANARY}":
            raise Failure(f"the upstream did not receive the credential once: {hits}")
        until("the answered request leaves the tray menu",
              lambda: ("No requests waiting" in labels(m := desk.menu())
                       and not any(e["label"].startswith("e2e-bot:") for e in m), m))
        until("the count and the badge leave the tray icon once nothing waits",
              lambda: (not (i := desk.items()[0])["props"].get("XAyatanaLabel")
                       and not desk.badge(i), i["props"]))
        if len(desk.notifications()) != 1:
            raise Failure(f"one held call, one notification: {desk.notifications()}")

        step("pause all agents: calls are refused at once; resume")
        d.click(t("nav-security"), "security in the sidebar")
        d.click(t("pause-toggle"), "the pause switch")
        d.wait(t("paused-banner"), "the paused banner")
        until("the tray's Pause all agents is checked while agents are paused",
              lambda: ((e := desk.entry(desk.menu(), "Pause all agents"))["toggle-state"] == 1, e))
        results.clear()
        agent_call(broker, "upstream", token, results)
        if not results or results[0][0] != 403 or "agents_paused" not in results[0][1]:
            raise Failure(f"a call while paused was not refused with agents_paused: {results}")
        if len([r for r in Recorder.seen if r["path"].startswith("/v1/hello")]) != 1:
            raise Failure("a call while paused reached the upstream")
        d.screenshot("paused")
        d.click(t("resume"), "resume in the banner")
        d.wait_gone(t("paused-banner"), "the paused banner after resuming")
        until("the tray's Pause all agents is unchecked after resuming",
              lambda: ((e := desk.entry(desk.menu(), "Pause all agents"))["toggle-state"] == 0, e))
        # The same switch from the tray: the window follows it.
        desk.click(desk.entry(desk.menu(), "Pause all agents"))
        d.wait(t("paused-banner"), "the paused banner after Pause all agents in the tray")
        until("Pause all agents in the tray is checked after a click on it",
              lambda: ((e := desk.entry(desk.menu(), "Pause all agents"))["toggle-state"] == 1, e))
        desk.click(desk.entry(desk.menu(), "Pause all agents"))
        d.wait_gone(t("paused-banner"), "the paused banner after a second click in the tray")
        until("Pause all agents in the tray is unchecked after a second click",
              lambda: ((e := desk.entry(desk.menu(), "Pause all agents"))["toggle-state"] == 0, e))

        step("audit: the call is recorded and the chain verifies")
        d.click(t("nav-audit"), "audit in the sidebar")
        d.wait_text(t("audit-table"), "/v1/hello", "the approved call in the audit table")
        d.wait_text(t("audit-verify"), "verified on this device", "the chain verification banner")
        d.wait(t("audit-chart"), "the calls chart")
        d.screenshot("audit")
        # The device kept the head it verified; the next check holds the log to it.
        d.click(t("reverify"), "verify again")
        d.wait_text(t("audit-anchor"), "verified here before, is unchanged",
                    "the second check against the head the first one kept")
        # Opening the screen again reads the log only from the record verified last.
        d.click(t("nav-agents"), "agents in the sidebar")
        d.click(t("nav-audit"), "audit in the sidebar")
        d.wait_text(t("audit-anchor"), "Read from record",
                    "the quick check from the anchored record when the screen opens")
        exported = []
        for _ in range(2):
            before = d.text(d.wait(t("export-path"), "")) if d.find_all(t("export-path")) else ""
            d.click(t("export-csv"), "export CSV")
            shown = until("the export's path", lambda: (
                (p := d.text(d.wait(t("export-path"), "the saved path"))) != before, p))
            exported.append(pathlib.Path(shown[shown.find("/"):].strip()))
        if exported[0] == exported[1] or not all(f.is_file() for f in exported):
            raise Failure(f"a second export replaced the first or is missing: {exported}")
        if "/v1/hello" not in exported[1].read_text():
            raise Failure(f"the CSV export does not hold the approved call: {exported[1]}")

        step("policies: a template saved in the editor decides the tester's calls, until deleted")
        d.click(t("nav-policies"), "policies in the sidebar")
        d.wait(t("new-policy"), "the policies screen")
        d.screenshot("policies")

        def verdict(method: str) -> str:
            d.choose(t("test-agent"), "e2e-bot", "the tester's agent")
            d.choose(t("test-credential"), "upstream", "the tester's integration")
            d.choose(t("test-method"), method, "the tester's method")
            d.fill(t("test-path"), "/v1/items", "the tester's path")
            before = [d.text(e) for e in d.find_all(t("check-result"))]
            d.click(t("test-submit"), "check")
            # Each check names what it asked; no two checks in a row ask the same.
            return until(f"the broker's verdict on {method} /v1/items",
                         lambda: ((v := [d.text(e) for e in d.find_all(t("check-result"))])
                                  and v != before and f"{method} /v1/items" in v[0], v))[0]

        if not verdict("POST").startswith("Allowed"):
            raise Failure("before any policy of ours, a POST under a standing grant is allowed")
        d.click(t("new-policy"), "new policy")
        d.click(t("template-standing-grants-read-only"), "the read-only standing grants template")
        d.click(t("save-policy"), "save policy")
        d.wait(t("policy-standing-grants-read-only"), "the saved policy in the list")
        denied = verdict("POST")
        if not denied.startswith("Denied") or "standing-grants-read-only" not in denied:
            raise Failure(f"the saved policy does not deny a POST, by its id: {denied!r}")
        if not verdict("GET").startswith("Allowed"):
            raise Failure("the read-only policy denies a GET")
        d.screenshot("policies-tester")
        d.click(t("delete-policy"), "delete the policy")
        d.click(t("confirm-delete-policy"), "confirm")
        d.wait_gone(t("policy-standing-grants-read-only"), "the deleted policy leaves the list")
        if not verdict("POST").startswith("Allowed"):
            raise Failure("the deleted policy still denies a POST")

        step("members: the screen lists this member")
        d.click(t("nav-members"), "members in the sidebar")
        d.wait_text("main", "Ada", "the members screen lists this member")
        d.screenshot("members")

        step("security: rotate keys with the button")
        d.click(t("nav-security"), "security in the sidebar")
        d.click(t("rotate-keys"), "rotate keys")
        d.wait(t("rotation-result"), "the rotation's summary", 60)
        d.screenshot("security")

        step("security: the recovery kit saved at onboarding imports; a wrong passphrase does not")
        d.s(f"/element/{d.wait(t('import-kit-file'), 'the kit file chooser')}/value",
            {"text": str(kit_file)})
        until("the chosen file fills the kit's text",
              lambda: ((v := d.property(t("import-kit-text"), "value") or "")
                       .startswith("LATCHKEY RECOVERY KIT"), v[:40]))
        d.fill(t("import-kit-pass"), "not the passphrase at all", "a wrong passphrase")
        d.click(t("import-kit"), "import kit")
        d.wait_text(t("import-kit-error"), "passphrase", "a wrong passphrase is refused, saying so")
        if d.attribute(t("import-kit-error"), "data-code") != "recovery_kit_refused":
            raise Failure("a wrong passphrase is not refused as recovery_kit_refused")
        d.fill(t("import-kit-pass"), "correct horse battery staple e2e", "the kit's passphrase")
        d.click(t("import-kit"), "import kit")
        d.wait_text(t("import-kit-result"), "Nothing new",
                    "every key in the kit (made before the rotation) is already on this device")

        step("lock: the keychain is locked, the app shows its lock screen; unlock")
        d.click(t("lock"), "lock on the security screen")
        d.wait(t("lock-screen"), "the lock screen")
        d.screenshot("locked")
        if d.find_all(t("nav-approvals")):
            raise Failure("the screens stay reachable while locked")
        # The person types their keychain password at the system's prompt; a test has no one
        # to do that, so the keyring is restarted with the password, as at login.
        subprocess.run(["gnome-keyring-daemon", "--replace", "--unlock", "--components=secrets"],
                       input="throwaway", text=True, capture_output=True, check=True, timeout=30)
        time.sleep(0.5)
        d.click(t("unlock"), "unlock on the lock screen")
        d.wait(t("nav-integrations"), "the app after unlocking")

        step("after rotation the agent's credential still works; approved for an hour this time")
        results.clear()
        call = threading.Thread(target=agent_call, args=(broker, "upstream", token, results))
        call.start()
        until("the call held after unlocking is announced too (the approval stream resumed)",
              lambda: (len(n := desk.notifications()) == 2, n))
        d.click(t("nav-approvals"), "approvals in the sidebar")
        request = d.wait('[data-testid^="approval-"]:not([data-testid="approval-detail"])',
                         "the second held call")
        d.s(f"/element/{request}/click", {})
        d.click(t("approve-for-3600"), "approve for an hour")
        call.join(60)
        if not results or results[0][0] != 200:
            raise Failure(f"the call after rotation did not go through: {results}")
        window = results[0][2]
        if not window:
            raise Failure("the call approved for an hour was not handed the window's capability")
        # With it the agent's next calls to the same path go through without asking anyone.
        results.clear()
        agent_call(broker, "upstream", token, results, capability=window, wait=0)
        if not results or results[0][0] != 200:
            raise Failure(f"a call inside the approved window was not let through: {results}")
        if len(desk.notifications()) != 2:
            raise Failure("a call inside the approved window asked for approval again")

        step("members: a device joins from the terminal with an invite made here; admit it here")
        code = make_member_invite(d, "the invite code")
        joined = latchkey(["workspace", "join", "--broker", broker, "--member-name", "Grace",
                           "--device-name", "grace-terminal", "--code-stdin"], code)
        device, printed = joined["device"], joined["fingerprint"]
        # Any other screen reads the count again, as the poll does every 10 s.
        d.click(t("nav-agents"), "agents in the sidebar")
        d.wait_text(t("pending-devices-count"), "1", "the Members badge counts the waiting device")
        d.click(t("nav-members"), "members in the sidebar")
        row = t(f"device-{device}")
        shown = d.text(d.wait(f"{row} .fp", "the waiting device's fingerprint"))
        if shown != printed:
            raise Failure(f"the app shows {shown!r} for the device whose CLI printed {printed!r}")
        d.screenshot("members-pending")
        d.click(f'{row} [data-testid="admit-device"]', "admit on the waiting device's row")
        d.fill(t("admit-fingerprint"), printed, "the fingerprint the CLI printed")
        mine = d.text(d.wait(f'{t("admit-then")} .fp', "this device's fingerprint in the dialog"))
        d.click(t("admit-submit"), "admit the device")
        d.wait_gone(t("admit-dialog"), "the admit dialog after admitting")
        d.wait_gone(t("pending-devices-count"), "the Members badge after admitting")
        received = latchkey(["device", "receive-keys", "--from", mine])
        if not received.get("workspace_keys"):
            raise Failure(f"the joined device received no workspace key: {received}")
        # A capability carries the credential's record key, derived from the workspace key; the
        # broker opens the credential with it, so the call goes through only with the real key.
        bot = latchkey(["agent", "create", "grace-bot"])
        capability = latchkey(["capability", "issue", "--agent", bot["agent"]["id"],
                               "--credential", "upstream", "--method", "get",
                               "--path", "/v1/joined"])["capability"]
        request = urllib.request.Request(f"{broker}/p/upstream/v1/joined", headers={
            "Authorization": f"Bearer {bot['token']}", "Latchkey-Capability": capability})
        try:
            urllib.request.urlopen(request, timeout=30).close()
        except urllib.error.HTTPError as error:
            raise Failure(f"the joined device's call was refused: {error.code} {error.read()!r}")
        hits = [r for r in Recorder.seen if r["path"] == "/v1/joined"]
        if len(hits) != 1 or hits[0]["headers"].get("authorization") != f"Bearer {CANARY}":
            raise Failure(f"the upstream did not receive the credential once: {hits}")

        step("audit: the joined member's device tries what only an admin may; the app shows it")
        refused = latchkey_refused(["invite", "create", "--role", "admin"])
        if "forbidden" not in refused:
            raise Failure(f"a member inviting an admin is not refused as forbidden: {refused!r}")
        d.click(t("nav-audit"), "audit in the sidebar")
        d.wait_text(t("audit-table"), "request_refused", "the refused request on the audit chain")
        d.wait_text(t("audit-table"), "POST /v1/invites", "the route the member's device tried")

        step("members: an invite made here and not needed is listed without its code, revoked")
        spare = make_member_invite(d, "the spare invite's code")
        pending = t("pending-invites")
        listed = d.text(d.wait(pending, "the pending invites section"))
        if "A new member" not in listed or spare in listed:
            raise Failure(f"the pending invite is not listed as such, or shows its code: {listed!r}")
        d.screenshot("members-invites")
        d.click(f'{pending} [data-testid="revoke-invite"]', "revoke on the pending invite")
        d.wait_gone(pending, "the pending invites section once nothing is pending")
        late = run_latchkey(["workspace", "join", "--broker", broker, "--member-name", "Late",
                             "--device-name", "late-terminal", "--code-stdin"], spare,
                            "e2e-late", "LATCHKEY_E2E_CLI_CONFIG")
        if late.returncode == 0 or "invite_invalid" not in late.stderr:
            raise Failure(f"the revoked code still admits a device: {late.returncode} "
                          f"{late.stderr.strip()!r}")

        step("members: remove the member who joined from the terminal, rotating the keys")
        d.click(t("nav-members"), "members in the sidebar")
        d.click(f'{t("member-Grace")} [data-testid="remove-member"]', "remove on Grace's card")
        if d.property(t("rotate"), "checked") is not True:
            raise Failure("removing a member does not offer rotation checked by default")
        d.click(t("confirm-remove"), "remove, with rotation")
        d.wait_text(t("toast"), "keys were rotated", "the removal and the rotation finished", 60)
        d.wait_gone(t("member-Grace"), "the removed member leaves the list")
        refused = latchkey_refused(["credential", "list"])
        if "device" not in refused:
            raise Failure(f"the removed member's device is not refused as such: {refused!r}")

        step("reconnect the OAuth integration in place")
        d.click(t("nav-integrations"), "integrations in the sidebar")
        d.click(f'{t("integration-idp")} [data-testid="reconnect"]', "reconnect on the idp card")
        d.wait_text(t("toast"), "Reconnected idp", "the reconnect finished in the browser", 60)

        step("disconnect the OAuth integration (revoked at the provider)")
        d.click(t("nav-integrations"), "integrations in the sidebar")
        card = t("integration-idp")
        d.click(f'{card} [data-testid="disconnect"]', "disconnect on the idp card")
        d.click(t("confirm-disconnect"), "confirm")
        d.wait_gone(card, "the disconnected integration's card")

        step("tray: Quit Latchkey ends the app")
        desk.click(desk.entry(desk.menu(), "Quit Latchkey"))
        until("Quit Latchkey in the tray menu ends the app", lambda: (not alive(app_pid), app_pid))
        until("the app's icon leaves the tray host", lambda: (not (i := desk.items()), i))

        step("no tray host: closing the window quits the app (nothing could show it again)")
        d.quit()
        desk.stop_hosts()
        d = Driver(driver_url, app, shots)
        d.wait(t("nav-integrations"), "the app opens again on its workspace")
        until("the app's embedded broker is back", lambda: (listening(broker), broker))
        desk.close_window()
        until("without a tray host, closing the window closes it",
              lambda: ((w := desk.window()) == "absent", w))
        until("without a tray host, closing the window quits the app (its broker stops)",
              lambda: (not listening(broker), broker))
    finally:
        d.quit()
        upstream.shutdown()

    step("leak check: no file the app or the CLI wrote holds the canary key")
    scan_for(CANARY, scanned)
    step(f"passed; screenshots in {shots}")


if __name__ == "__main__":
    try:
        main()
    except Failure as failure:
        print(f"desktop story FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
