// Unmodified Octokit (npm @octokit/rest) through the broker's agent proxy.
//
// The agent changes only Octokit's baseUrl (the broker's /p/github) and its auth (the Latchkey
// agent token; Octokit sends it as `authorization: token <token>`). The capability goes in a
// `latchkey-capability` header added by a request hook, or appended to the token after a `.`.
// The upstream must see the real token and never the agent's; nothing Octokit returns may
// contain the real token, even when the upstream echoes it.
//
// The broker is the `broker_fixture` example of latchkey-server; the upstream is a recording
// node:http server answering GET /repos/{owner}/{repo} and GET /user.
//
// Run from the repository root: node --test tests/interop/node/

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import http from "node:http";
import { createInterface } from "node:readline";
import { after, before, beforeEach, test } from "node:test";
import { fileURLToPath } from "node:url";

import { Octokit } from "@octokit/rest";

const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const SECRET_ENV = "LATCHKEY_INTEROP_UPSTREAM_SECRET";
const CANARY = `ghp_LKCANARY${randomBytes(16).toString("hex")}`;
const REDACTED = "[REDACTED by Latchkey]";
const FIXTURE = ["-q", "-p", "latchkey-server", "--example", "broker_fixture"];

/** A GitHub look-alike that records requests and echoes the authorization it received. */
function startUpstream() {
  const received = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      received.push({
        method: req.method,
        path: req.url,
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body: Buffer.concat(chunks).toString("utf8"),
      });
      const saw = req.headers.authorization ?? "";
      const repo = req.url.match(/^\/repos\/([^/?]+)\/([^/?]+)$/);
      let status = 200;
      let body;
      if (req.method === "GET" && repo) {
        const [, owner, name] = repo;
        body = {
          id: 1296269,
          name,
          full_name: `${owner}/${name}`,
          owner: { login: owner, id: 1, type: "Organization" },
          private: false,
          default_branch: "main",
          description: `you sent ${saw}`,
        };
      } else if (req.method === "GET" && req.url === "/user") {
        body = { login: "latchkey-bot", id: 2, type: "User", bio: `you sent ${saw}` };
      } else {
        status = 404;
        body = { message: "Not Found" };
      }
      const data = JSON.stringify(body);
      res.writeHead(status, {
        "content-type": "application/json; charset=utf-8",
        "content-length": Buffer.byteLength(data),
        "x-upstream-saw": saw,
        "x-ratelimit-remaining": "4999",
      });
      res.end(data);
    });
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      resolve({ server, received, url: `http://127.0.0.1:${server.address().port}` });
    });
  });
}

/** Starts broker_fixture and reads its one line of JSON. */
async function startBroker(upstreamUrl) {
  const args = ["--upstream", upstreamUrl, "--provider", "github", "--injection", "bearer"];
  const child = spawn("cargo", ["run", ...FIXTURE, "--", ...args, "--secret-env", SECRET_ENV], {
    cwd: REPO_ROOT,
    // Verbose on purpose: the logs are checked for the token below.
    env: { ...process.env, [SECRET_ENV]: CANARY, LATCHKEY_LOG: "debug" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let logs = "";
  child.stderr.on("data", (c) => {
    logs += c.toString("utf8");
  });
  const exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
  const lines = createInterface({ input: child.stdout });
  const line = await Promise.race([
    new Promise((resolve) => lines.once("line", resolve)),
    exited.then(() => null),
    new Promise((resolve) => setTimeout(() => resolve(null), 300_000).unref()),
  ]);
  if (line === null) {
    child.kill();
    assert.fail(`broker_fixture printed nothing; its log:\n${logs.slice(-4000)}`);
  }
  const info = JSON.parse(line);
  return {
    baseUrl: info.base_url,
    token: info.agent_token,
    capability: info.capability,
    dataDir: info.data_dir,
    logs: () => logs,
    async stop() {
      child.stdin.end();
      return exited;
    },
  };
}

/** Octokit as an agent would set it up: base URL, token, and the capability via a hook. */
function octokit(broker, { auth = broker.token, capabilityHeader = true } = {}) {
  const client = new Octokit({ auth, baseUrl: broker.baseUrl, userAgent: "latchkey-interop" });
  if (capabilityHeader) {
    client.hook.before("request", (options) => {
      options.headers["latchkey-capability"] = broker.capability;
    });
  }
  return client;
}

function assertUpstreamSawOnlyTheRealToken(got, broker) {
  assert.equal(got.headers.authorization, `Bearer ${CANARY}`, "the upstream gets the real token");
  const everything = got.rawHeaders.join("\n") + "\n\n" + got.body;
  assert.ok(!everything.includes(broker.token), "the agent token never reaches the upstream");
  assert.ok(!everything.includes(broker.capability), "the capability never reaches the upstream");
  assert.equal(got.headers["latchkey-capability"], undefined, "the capability header stays");
}

function assertNoSecret(value, what) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  assert.ok(!text.includes(CANARY), `${what} must not contain the real token`);
}

let upstream;
let broker;

before(async () => {
  const build = spawnSync("cargo", ["build", ...FIXTURE], {
    cwd: REPO_ROOT,
    encoding: "utf8",
    timeout: 900_000,
  });
  assert.equal(build.status, 0, `building broker_fixture failed:\n${build.stderr}`);
  upstream = await startUpstream();
  broker = await startBroker(upstream.url);
});

beforeEach(() => {
  upstream.received.length = 0;
});

after(async () => {
  if (broker) {
    const code = await broker.stop();
    const logs = broker.logs();
    assert.equal(code, 0, `broker_fixture exited with ${code}:\n${logs.slice(-4000)}`);
    assert.ok(!logs.includes(CANARY), "the real token never appears in the broker's logs");
    assert.ok(!logs.includes(broker.token), "the agent token never appears in the broker's logs");
    assert.ok(!existsSync(broker.dataDir), "the fixture removes its data directory on exit");
  }
  upstream?.server.close();
});

test("octokit reaches the upstream with the real token and gets none of it back", async () => {
  const client = octokit(broker);
  const repo = await client.rest.repos.get({ owner: "acme", repo: "widgets" });
  const user = await client.rest.users.getAuthenticated();

  assert.deepEqual(
    upstream.received.map((r) => `${r.method} ${r.path}`),
    ["GET /repos/acme/widgets", "GET /user"],
    "the upstream gets GitHub's own paths",
  );
  for (const got of upstream.received) {
    assertUpstreamSawOnlyTheRealToken(got, broker);
    assert.match(got.headers["user-agent"], /^latchkey-interop/, "Octokit's headers pass through");
  }
  assert.equal(repo.status, 200);
  assert.equal(repo.data.full_name, "acme/widgets", "Octokit parsed the upstream's answer");
  assert.equal(user.data.login, "latchkey-bot");
  assert.equal(repo.data.description, `you sent Bearer ${REDACTED}`, "an echo is replaced");
  assert.equal(repo.headers["x-upstream-saw"], REDACTED, "an echoing header is replaced");
  assert.equal(repo.headers["x-ratelimit-remaining"], "4999", "other headers pass through");
  assertNoSecret(repo, "the repository response");
  assertNoSecret(user, "the user response");
});

test("a capability appended to the token works without a hook", async () => {
  const client = octokit(broker, {
    auth: `${broker.token}.${broker.capability}`,
    capabilityHeader: false,
  });
  const user = await client.rest.users.getAuthenticated();
  assert.equal(user.data.login, "latchkey-bot", "the call went through");
  assert.equal(upstream.received.length, 1);
  assertUpstreamSawOnlyTheRealToken(upstream.received[0], broker);
  assertNoSecret(user, "the user response");
});

test("without a capability Octokit throws the broker's error and the upstream is never called", async () => {
  const client = octokit(broker, { capabilityHeader: false });
  await assert.rejects(
    // `Prefer: wait=0`: refuse at once instead of holding the call for a member's approval.
    client.rest.repos.get({ owner: "acme", repo: "widgets", headers: { prefer: "wait=0" } }),
    (error) => {
      assert.equal(error.status, 428, "a call without a capability needs an approval");
      assert.equal(error.response.data.code, "approval_required", "the broker's code arrives");
      return true;
    },
  );
  assert.equal(upstream.received.length, 0, "a refused call never reaches the upstream");
});

test("a key that is not an agent token is refused as unauthorized", async () => {
  const client = octokit(broker, { auth: "ghp_not_a_latchkey_token" });
  await assert.rejects(client.rest.users.getAuthenticated(), (error) => {
    assert.equal(error.status, 401);
    assert.equal(error.response.data.code, "unknown_token", "the broker's code arrives");
    return true;
  });
  assert.equal(upstream.received.length, 0, "a refused call never reaches the upstream");
});
