#!/usr/bin/env python3
"""The desktop app on a team server behind a private certificate authority, end to end.

Started by tests/stories/desktop.sh after the main story (tests/e2e/desktop.py), in the same
Xvfb, D-Bus session and keychain, with the app on a profile of its own. The team server is the
real `latchkey-server` serving TLS itself (`--tls-cert`) with a certificate from an authority
the story made with openssl, which no system trusts.

Walks what a member does: create a workspace on that server and see the app refuse it while the
authority is not given (the broker's certificate is not trusted, and nothing is created), then
paste the authority's PEM and create it; add an API key (its ciphertext goes over that TLS); and
find the authority under Security, by the same SHA-256 fingerprint openssl gives.
"""
import pathlib
import sys

from desktop import CANARY, Driver, Failure, add_api_key, env, listening, scan_for, step, until

TEAM_CANARY = CANARY + "-team"


def main() -> None:
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
        refused = d.wait_text(t("error"), "certificate", "the refusal names the certificate")
        if "authority" not in refused:
            raise Failure(f"the refusal does not say the authority is not trusted: {refused!r}")
        d.screenshot("onboarding-team-refused")

        step("team server: with the authority's PEM pasted the workspace is created there")
        hint = d.text(d.wait(t("server-ca-hint"), "the private authority field opens, saying why"))
        if "certificate authority" not in hint:
            raise Failure(f"the hint does not point at the authority: {hint!r}")
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
    finally:
        d.quit()

    step("team server: no file the app or the server wrote holds the key")
    scan_for(TEAM_CANARY, scanned)
    step("team story passed")


if __name__ == "__main__":
    try:
        main()
    except Failure as failure:
        print(f"desktop team story FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
