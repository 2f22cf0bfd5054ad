#!/usr/bin/env python3
"""The desktop app on a team server behind a private certificate authority, end to end.

Started by tests/stories/desktop.sh after the main story (tests/e2e/desktop.py), in the same
Xvfb, D-Bus session and keychain, with the app on a profile of its own. The team server is the
real `latchkey-server` serving TLS itself (`--tls-cert`) with a certificate from an authority
the story made with openssl, which no system trusts.

Two parts, each a run of this script with the app on a profile of its own (`create`, then
`join`).

`create` walks what a first member does: create a workspace on that server and see the app
refuse it while the authority is not given (the broker's certificate is not trusted, and nothing
is created), then paste the authority's PEM and create it; add an API key (its ciphertext goes
over that TLS); and find the authority under Security, by the same SHA-256 fingerprint openssl
gives.

`join` walks what a new member does: an admin at the terminal (the real `latchkey` CLI, its own
profile, trusting the authority with --broker-ca) makes a second workspace on the same server,
adds a shared API key and reads out an invite code. The app joins with it (refused until the
authority is pasted), shows its fingerprint, and says it waits while the admin has not admitted
it. The admin admits it after comparing that fingerprint; a mistyped admin fingerprint in the
app is refused as a mismatch, not taken for a wait; the right one opens the app on the workspace
with the admin's integration. A grant made in the app then lets an agent call through the team
server: the upstream receives the admin's key, which only the workspace key the app received
could have let the app sign for.
"""
import pathlib
import ssl
import sys
import threading
import urllib.error
import urllib.request

from desktop import (CANARY, Driver, Failure, Recorder, add_api_key, create_agent, env, latchkey,
                     listening, recording_upstream, scan_for, step, until)

TEAM_CANARY = CANARY + "-team"
JOIN_CANARY = CANARY + "-join"


def create() -> None:
    app = env("LATCHKEY_E2E_APP")
    driver_url = env("LATCHKEY_E2E_DRIVER")
    shots = pathlib.Path(env("LATCHKEY_E2E_SCREENSHOTS"))
    server = env("LATCHKEY_E2E_TEAM_URL")
    ca_pem = pathlib.Path(env("LATCHKEY_E2E_TEAM_CA")).read_text()
    ca_fingerprint = env("LATCHKEY_E2E_TEAM_CA_FINGERPRINT")
    scanned = [pathlib.Path(p) for p in env("LATCHKEY_E2E_TEAM_SCAN").split(":")]

    until("the team server accepts connections", lambda: (listening(server), server))
    d = Driver(driver_url, app, shots)
    t = d.tid
    try:
        step("team server: without its authority the app refuses it and creates nothing")
        d.click(t("start-create"), "the welcome screen offers to create a workspace")
        d.click(t("where-server"), "a team server is a choice")
        d.fill(t("server-url"), server, "team server URL")
        d.fill(t("workspace-name"), "Acme Team", "workspace name field")
        d.fill(t("member-name"), "Grace", "your name field")
        d.fill(t("device-name"), "e2e-team-laptop", "device name field")
        d.click(t("create-workspace"), "create button")
        refused_for_its_authority(d, "server-ca")
        d.screenshot("onboarding-team-refused")

        step("team server: with the authority's PEM pasted the workspace is created there")
        # Typed with Enter between lines: WebKitWebDriver drops a "\n" in typed text.
        d.fill(t("server-ca"), ca_pem.strip().replace("\n", "\ue007"), "the authority's PEM")
        d.screenshot("onboarding-team-ca")
        d.click(t("create-workspace"), "create button")
        d.wait(t("fingerprint"), "the new device's fingerprint is shown", 60)
        d.click(t("onboarding-done"), "skip the recovery kit for now")
        d.wait(t("nav-integrations"), "the app opens on the team workspace")

        step("team server: an API key goes to it (ciphertext, over its TLS)")
        add_api_key(d, "team-upstream", TEAM_CANARY, "http://127.0.0.1:9")

        step("security: the kept authority is listed by its SHA-256 fingerprint")
        d.click(t("nav-security"), "security in the sidebar")
        listed = d.wait_text(t("broker-ca-list"), ca_fingerprint,
                             "the card lists the authority by openssl's fingerprint")
        if ca_pem.strip().splitlines()[1] in d.text(d.wait(t("broker-ca-card"), "the card")):
            raise Failure("the card shows the certificate's body, not only its fingerprint")
        d.screenshot("security-team-server")
        print(f"  listed: {listed.strip()}")

        step("security: another authority, or the system's alone, is refused and changes nothing")
        other_pem = pathlib.Path(env("LATCHKEY_E2E_OTHER_CA")).read_text()
        d.fill(t("broker-ca-pem"), other_pem.strip().replace("\n", "\ue007"),
               "another authority's PEM")
        d.click(t("broker-ca-save"), "trust this authority")
        d.wait_text(t("error"), "certificate", "the server's certificate fails under the other one")
        if d.attribute(t("error"), "data-code") != "broker_tls_refused":
            raise Failure("replacing the authority with one the server does not use is not "
                          "refused as broker_tls_refused")
        d.click(t("broker-ca-clear"), "use this computer's authorities only")
        d.wait_text(t("error"), "certificate", "the system's authorities alone refuse the server")
        d.wait_text(t("broker-ca-list"), ca_fingerprint, "the kept authority is still the one")
        step("team server: the app still works with the authority it kept")
        d.click(t("nav-integrations"), "integrations in the sidebar")
        add_api_key(d, "team-upstream-2", TEAM_CANARY + "-2", "http://127.0.0.1:9")
    finally:
        d.quit()

    step("team server: no file the app or the server wrote holds the key")
    scan_for(TEAM_CANARY, scanned)
    step("team story passed")


def refused_for_its_authority(d: Driver, field: str) -> None:
    """Checks the onboarding refused the team server for its untrusted authority and opened the
    private-authority field `field` with a line saying why."""
    refused = d.wait_text(d.tid("error"), "certificate", "the refusal names the certificate")
    if "authority" not in refused:
        raise Failure(f"the refusal does not say the authority is not trusted: {refused!r}")
    hint = d.text(d.wait(d.tid(f"{field}-hint"), "the private authority field opens, saying why"))
    if "certificate authority" not in hint:
        raise Failure(f"the hint does not point at the authority: {hint!r}")


def admin(args: list, stdin: str = "") -> dict:
    """The terminal of the admin of the second workspace: the `latchkey` CLI on a profile and
    configuration of its own."""
    return latchkey(args, stdin, profile="e2e-ops", config="LATCHKEY_E2E_OPS_CONFIG")


def join() -> None:
    app = env("LATCHKEY_E2E_APP")
    driver_url = env("LATCHKEY_E2E_DRIVER")
    shots = pathlib.Path(env("LATCHKEY_E2E_SCREENSHOTS"))
    server = env("LATCHKEY_E2E_TEAM_URL")
    ca_file = env("LATCHKEY_E2E_TEAM_CA")
    ca_pem = pathlib.Path(ca_file).read_text()
    scanned = [pathlib.Path(p) for p in env("LATCHKEY_E2E_TEAM_SCAN").split(":")]

    upstream, upstream_url = recording_upstream()

    until("the team server accepts connections", lambda: (listening(server), server))
    step("join: an admin at the terminal makes a workspace there, shares a key and invites")
    created = admin(["workspace", "create", "--broker", server, "--broker-ca", ca_file,
                     "--name", "Acme Ops", "--member-name", "Lin", "--device-name", "lin-terminal"])
    admin_fingerprint = created["fingerprint"]
    admin(["credential", "add", "--name", "ops-upstream", "--provider", "custom-api-key",
           "--base-url", upstream_url, "--key-stdin"], JOIN_CANARY)
    code = admin(["invite", "create"])["code"]

    capability = ""
    d = Driver(driver_url, app, shots)
    t = d.tid
    try:
        step("join: without the authority the app refuses the server and joins nothing")
        d.click(t("start-join"), "the welcome screen offers to join with an invite")
        d.fill(t("join-url"), server, "team server URL")
        d.fill(t("invite-code"), code, "the invite code the admin read out")
        d.fill(t("join-name"), "Mia", "your name field")
        d.fill(t("join-device"), "e2e-join-laptop", "device name field")
        d.click(t("join-workspace"), "join button")
        refused_for_its_authority(d, "join-ca")

        step("join: with the authority pasted the device joins and shows its fingerprint")
        # Typed with Enter between lines: WebKitWebDriver drops a "\n" in typed text.
        d.fill(t("join-ca"), ca_pem.strip().replace("\n", "\ue007"), "the authority's PEM")
        d.click(t("join-workspace"), "join button")
        fingerprint = d.text(d.wait(t("fingerprint"), "the joining device's fingerprint", 60))
        d.fill(t("admin-fingerprint"), admin_fingerprint, "the admin's fingerprint, read out")
        d.click(t("finish-join"), "I've been admitted (too early)")
        d.wait_text(t("not-admitted"), "admin",
                    "before the admin acts, the app says it waits for admission")
        d.screenshot("onboarding-join-waiting")

        step("join: the admin finds the device, compares its fingerprint and admits it")
        devices = [x for x in admin(["device", "list"]) if x["name"] == "e2e-join-laptop"]
        if len(devices) != 1 or devices[0]["member_name"] != "Mia":
            raise Failure(f"the admin's device list does not show the joining device: {devices}")
        if devices[0]["fingerprint"] != fingerprint.strip():
            raise Failure(f"the app shows {fingerprint!r}, the admin's terminal "
                          f"{devices[0]['fingerprint']!r}: the broker handed over other keys")
        admitted = admin(["device", "admit", devices[0]["id"], "--fingerprint", fingerprint])
        if admitted["keys"] != ["workspace"] or admitted["fingerprint"] != admin_fingerprint:
            raise Failure(f"the admission did not send the workspace key from the admin: {admitted}")

        step("join: a fingerprint that is not the admin's is refused as a mismatch, not a wait")
        wrong = "-".join(["0000"] * (admin_fingerprint.count("-") + 1))
        d.fill(t("admin-fingerprint"), wrong, "a mistyped admin fingerprint")
        d.click(t("finish-join"), "I've been admitted")
        mismatch = d.wait_text(t("error"), "Compare the fingerprint",
                               "the keys from another fingerprint are refused, saying what to do")
        if d.attribute(t("error"), "data-code") != "fingerprint_mismatch":
            raise Failure(f"the refusal is not a fingerprint mismatch: {mismatch!r}")
        if d.find_all(t("not-admitted")):
            raise Failure("after the admin admitted, a wrong fingerprint still reads as a wait")
        d.screenshot("onboarding-join-mismatch")

        step("join: the admin's fingerprint opens the app on the workspace, with its key")
        d.fill(t("admin-fingerprint"), admin_fingerprint, "the admin's fingerprint again")
        d.click(t("finish-join"), "I've been admitted")
        d.wait(t("nav-integrations"), "the app opens on the joined workspace", 60)
        d.wait(t("integration-ops-upstream"), "the admin's shared integration is listed")
        d.screenshot("integrations-joined")

        step("join: a grant made here lets an agent call through the team server")
        token = create_agent(d, "ops-bot", server)
        card = t("agent-ops-bot")
        d.click(f'{card} [data-testid="add-grant"]', "grant access on the agent's card")
        d.wait_text(t("grant-credential"), "ops-upstream", "the shared integration can be granted")
        d.click(t("grant-submit"), "grant access (the defaults: GET and HEAD, every path, an hour)")
        capability = d.text(d.wait(t("grant-capability"), "the grant's capability, shown once"))
        usage = d.text(d.wait(t("grant-usage"), "how the agent sends the capability"))
        if f"<agent token>.{capability}" not in usage:
            raise Failure(f"the dialog does not say the capability goes after the token: {usage!r}")
        d.screenshot("agent-grant-capability")
        d.click(t("grant-done"), "close the capability dialog")
        d.wait_gone(t("grant-capability"), "the capability leaves the screen")
        d.wait_text(card, "ops-upstream", "the agent's card lists the grant")
        status, answer = call_through(server, ca_file, f"{token}.{capability}")
        if status != 200:
            raise Failure(f"the agent's call under the grant was refused: {status} {answer}")
        if JOIN_CANARY in answer:
            raise Failure("the agent saw the credential")
        hits = [r for r in Recorder.seen if r["path"] == "/v1/ops"]
        if len(hits) != 1 or hits[0]["headers"].get("authorization") != f"Bearer {JOIN_CANARY}":
            raise Failure(f"the upstream did not receive the admin's key once: {hits}")
        # Each screen reads its list when it opens.
        d.click(t("nav-integrations"), "integrations in the sidebar")
        used = d.wait_text(t("integration-ops-upstream"), "Last used",
                           "the integration's card shows when it was last used")
        if "never" in used:
            raise Failure(f"the integration used a moment ago reads as never used: {used!r}")
        d.click(t("nav-agents"), "agents in the sidebar")
        d.wait_text(card, "last used just now", "the agent's card shows its call")

        step("join: a grant revoked here refuses the agent's next call at once")
        d.click(f'{card} [data-testid="revoke-grant"]', "revoke on the grant's row")
        d.click(t("confirm-revoke-grant"), "confirm")
        d.wait_gone(f'{card} [data-testid="revoke-grant"]', "the revoked grant leaves the card")
        status, answer = call_through(server, ca_file, f"{token}.{capability}")
        if status != 403 or "capability_invalid" not in answer or "revoked" not in answer:
            raise Failure(f"a call under the revoked grant was not refused as such: "
                          f"{status} {answer}")

        step("join: a new token for the agent; the old one is refused")
        d.click(f'{card} [data-testid="regenerate"]', "new token on the agent's card")
        d.click(t("confirm"), "confirm")
        fresh = d.text(d.wait(t("agent-token"), "the new token, shown once"))
        d.click(t("token-done"), "close the token dialog")
        if fresh == token or not fresh.startswith("lk_"):
            raise Failure(f"the new token is not a new one: {fresh!r}")
        status, answer = call_through(server, ca_file, token)
        if status != 401 or "unknown_token" not in answer:
            raise Failure(f"the replaced token was not refused: {status} {answer}")

        step("join: the agent's call without a grant waits for an admin, who denies it")
        held: list = []
        waiting = threading.Thread(target=lambda: held.append(
            call_through(server, ca_file, fresh, wait=60)))
        waiting.start()
        asked = until("the held call reaches the admin's terminal",
                      lambda: (held or (a := admin(["approvals", "list"])), held or a))
        if held:
            raise Failure(f"the call without a grant was answered instead of held: {held}")
        if len(asked) != 1 or asked[0].get("path") != "/v1/ops":
            raise Failure(f"the admin is not asked about exactly the held call: {asked}")
        # A shared credential's approvals go to admins: the member's app shows why her agent
        # waits, and offers no answer.
        d.click(t("nav-approvals"), "approvals in the sidebar")
        row = t(f"approval-{asked[0]['id']}")
        d.click(row, "the member's agent's held call, listed")
        d.wait_text(t("answered-by-admins"), "an admin answers it",
                    "the member is told who answers her agent's call")
        if d.find_all(t("approve-once")) or d.find_all(t("deny")):
            raise Failure("a member is offered an answer for a shared credential's call")
        if d.find_all(f'{t("tab-pending")} .badge'):
            raise Failure("a call the member cannot answer is counted as waiting for her")
        d.screenshot("approvals-admin-answers")
        admin(["approvals", "deny", asked[0]["id"]])
        waiting.join(60)
        if not held or held[0][0] != 403 or "approval_denied" not in held[0][1]:
            raise Failure(f"the denied call was not refused as approval_denied: {held}")

        step("join: another device of this member joins from the terminal; admitted here")
        d.click(t("nav-members"), "members in the sidebar")
        d.click(t("add-own-device"), "add a device of mine")
        d.click(t("create-device-invite"), "create the device invite")
        code = d.text(d.wait(t("device-invite-code"), "the device invite's code"))
        member = d.text(d.wait(t("device-invite-member"), "this member's id"))
        if d.text(d.wait(t("device-invite-server"), "the server URL")) != server:
            raise Failure("the device invite does not name the team server")
        d.wait(t("device-invite-ca"), "the invite offers the private authority's certificate")
        d.click(f'{t("device-invite-dialog")} .btn.primary', "done")
        joined = latchkey(["workspace", "join", "--broker", server, "--broker-ca", ca_file,
                           "--device-of", member, "--device-name", "mia-terminal",
                           "--code-stdin"], code, profile="e2e-mia", config="LATCHKEY_E2E_MIA_CONFIG")
        device, printed = joined["device"], joined["fingerprint"]
        d.click(t("nav-agents"), "agents in the sidebar")
        d.click(t("nav-members"), "members in the sidebar (read again)")
        row = t(f"device-{device}")
        if d.text(d.wait(f"{row} .fp", "the new device under this member")) != printed:
            raise Failure("the app shows another fingerprint than the terminal printed")
        d.click(f'{row} [data-testid="admit-device"]', "admit on the new device's row")
        d.fill(t("admit-fingerprint"), printed, "the fingerprint the terminal printed")
        mine = d.text(d.wait(f'{t("admit-then")} .fp', "this device's fingerprint in the dialog"))
        d.click(t("admit-submit"), "admit the device")
        d.wait_gone(t("admit-dialog"), "the admit dialog after admitting")
        received = latchkey(["device", "receive-keys", "--from", mine], profile="e2e-mia",
                            config="LATCHKEY_E2E_MIA_CONFIG")
        if not received.get("workspace_keys") or not received.get("member_keys"):
            raise Failure(f"the member's own device did not get both keys: {received}")
        if len([r for r in Recorder.seen if r["path"] == "/v1/ops"]) != 1:
            raise Failure("a refused call reached the upstream")
    finally:
        d.quit()
        upstream.shutdown()

    step("join: no file the app, the admin's terminal or the server wrote holds the key")
    scan_for(JOIN_CANARY, scanned)
    step("join: nor the capability, which only the agent keeps")
    scan_for(capability, scanned, "the grant's capability")
    step("join story passed")


def call_through(server: str, ca_file: str, key: str, wait: int = 0) -> tuple:
    """An agent's GET of /v1/ops through the team server with `key` (its token, or its token, a
    `.` and a grant's capability, as an SDK sends an API key), over TLS verified with the
    authority: the status and the body."""
    # `Prefer: wait=0` (the default here): a call the grant does not cover is answered at once,
    # not held for a member's approval (the broker's message then says why).
    request = urllib.request.Request(f"{server}/p/ops-upstream/v1/ops",
                                     headers={"Authorization": f"Bearer {key}",
                                              "Prefer": f"wait={wait}"})
    context = ssl.create_default_context(cafile=ca_file)
    try:
        with urllib.request.urlopen(request, timeout=wait + 30, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


if __name__ == "__main__":
    part = sys.argv[1] if len(sys.argv) > 1 else ""
    if part not in ("create", "join"):
        sys.exit("usage: desktop_team.py create|join")
    try:
        create() if part == "create" else join()
    except Failure as failure:
        print(f"desktop team story FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
