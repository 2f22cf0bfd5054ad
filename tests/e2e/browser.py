#!/usr/bin/env python3
"""A scripted "system browser" for the desktop story: the app runs it (LATCHKEY_BROWSER) with the
authorization URL, and it plays the person signing in at oidc-provider over plain HTTP: follows
redirects by hand with its own cookies, fills the development login and consent forms, and
delivers the redirect to the app's loopback callback. Standard library only.

It detaches at once (the app does not wait for a browser) and logs to $LATCHKEY_E2E_BROWSER_LOG.
"""
import http.cookiejar
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def sign_in(start: str) -> str:
    redirect_uri = urllib.parse.parse_qs(urllib.parse.urlsplit(start).query)["redirect_uri"][0]
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPCookieProcessor(jar))
    url, data = start, None
    for _ in range(20):
        request = urllib.request.Request(url, data=data)
        try:
            response = opener.open(request, timeout=10)
            status, page, here = response.status, response.read().decode(), response.url
            location = None
        except urllib.error.HTTPError as e:
            status, page, here = e.code, e.read().decode(errors="replace"), url
            location = e.headers.get("Location")
        if 300 <= status < 400 and location:
            target = urllib.parse.urljoin(here, location)
            if target.startswith(redirect_uri):
                return target
            url, data = target, None
            continue
        if status != 200:
            raise RuntimeError(f"the provider answered {status}: {page[:300]}")
        action = re.search(r'action="([^"]+)"', page)
        prompt = re.search(r'name="prompt" value="([^"]+)"', page)
        if not action or not prompt:
            raise RuntimeError("no sign-in form on the provider's page")
        form = {"prompt": prompt.group(1)}
        if form["prompt"] == "login":
            form.update(login="ada", password="any")
        url = urllib.parse.urljoin(here, action.group(1).replace("&amp;", "&"))
        data = urllib.parse.urlencode(form).encode()
    raise RuntimeError("too many steps to sign in")


def main() -> None:
    log = open(os.environ.get("LATCHKEY_E2E_BROWSER_LOG", os.devnull), "a")
    if os.fork():
        return
    try:
        callback = sign_in(sys.argv[1])
        with urllib.request.urlopen(callback, timeout=10) as answer:
            print(f"callback delivered: {answer.status}", file=log, flush=True)
    except Exception as error:  # reported for the story's failure message
        print(f"sign-in failed: {error}", file=log, flush=True)


if __name__ == "__main__":
    main()
