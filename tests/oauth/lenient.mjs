// A lenient OAuth 2.0 authorization server for the client's tests: oauth2-mock-server on
// 127.0.0.1 with an ephemeral port, printing one JSON line `{"issuer": ...}` on stdout once it
// accepts connections. It runs until its standard input closes or it is killed.
//
// Lenient means it checks almost nothing: any client, any redirect URI, any state; the
// authorization endpoint redirects straight back with a code (no sign-in). Only what the client
// itself checks can protect it here. The tests choose the server's behaviour with flags:
//
//   --iss=none|self|other   what the authorization response carries as `iss` (default none)
//   --promise-iss           the metadata says `authorization_response_iss_parameter_supported`
//   --pkce-methods=A,B      `code_challenge_methods_supported` in the metadata (default S256);
//                           an empty list leaves the field out
//   --no-refresh-rotation   refresh answers carry no new refresh token (the old one stays)
//
// Its metadata is served at both RFC 8414 and OpenID Connect discovery paths. `GET /received`
// returns what the authorization and token endpoints were sent, so the tests can check what
// the client sent.

import { createServer } from 'node:http';
import { OAuth2Server } from 'oauth2-mock-server';

const flags = Object.fromEntries(
  process.argv.slice(2).map((arg) => {
    const [name, value = 'true'] = arg.replace(/^--/, '').split('=');
    return [name, value];
  }),
);
const issMode = flags.iss ?? 'none';
const pkceMethods = (flags['pkce-methods'] ?? 'S256').split(',').filter(Boolean);

const mock = new OAuth2Server();
await mock.issuer.keys.generate('RS256');
const received = { authorize: [], token: [] };

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;
mock.issuer.url = issuer;

mock.service.on('beforeAuthorizeRedirect', (redirect, req) => {
  received.authorize.push(Object.fromEntries(new URL(req.url, issuer).searchParams));
  if (issMode === 'self') redirect.url.searchParams.set('iss', issuer);
  if (issMode === 'other') redirect.url.searchParams.set('iss', 'http://127.0.0.1:1/elsewhere');
});
mock.service.on('beforeResponse', (response, req) => {
  received.token.push({ ...req.body, authorization: req.headers.authorization ?? null });
  if (flags['no-refresh-rotation'] && req.body.grant_type === 'refresh_token') {
    delete response.body.refresh_token;
  }
});

const metadata = () => {
  const base = {
    issuer,
    authorization_endpoint: `${issuer}/authorize`,
    token_endpoint: `${issuer}/token`,
    revocation_endpoint: `${issuer}/revoke`,
    response_types_supported: ['code'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
  };
  if (pkceMethods.length > 0) base.code_challenge_methods_supported = pkceMethods;
  if (flags['promise-iss']) base.authorization_response_iss_parameter_supported = true;
  return base;
};

const json = (res, body) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

server.on('request', (req, res) => {
  const path = new URL(req.url, issuer).pathname;
  if (
    req.method === 'GET' &&
    (path === '/.well-known/oauth-authorization-server' ||
      path === '/.well-known/openid-configuration')
  ) {
    json(res, metadata());
  } else if (req.method === 'GET' && path === '/received') {
    json(res, received);
  } else {
    mock.service.requestHandler(req, res);
  }
});

process.stdout.write(`${JSON.stringify({ issuer })}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
