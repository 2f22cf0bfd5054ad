// A strict OAuth 2.0 authorization server for the client's tests: oidc-provider on 127.0.0.1 with
// an ephemeral port, printing one JSON line `{"issuer": ..., "client_id": ...}` on stdout once it
// accepts connections. It runs until its standard input closes or it is killed.
//
// What makes it strict:
// - PKCE is required for every client, and oidc-provider only implements S256;
// - authorization codes are single use (a replayed code also revokes what it issued);
// - redirect URIs must be registered; the native client registers http://127.0.0.1/callback
//   and any loopback port is accepted for it (RFC 8252 section 7.3);
// - refresh tokens rotate on every use, and presenting a rotated-out refresh token revokes the
//   whole grant (reuse detection);
// - authorization responses carry `iss` and the metadata says so (RFC 9207);
// - RFC 7009 revocation is enabled.
// Sign-in uses oidc-provider's development interactions: a login form (any login and password)
// and a consent form, driven over plain HTTP by the test.

import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const CLIENT_ID = 'latchkey-native';

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: CLIENT_ID,
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      redirect_uris: ['http://127.0.0.1/callback'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    },
  ],
  pkce: { required: () => true },
  // A refresh token on every code grant (not only with offline_access), rotated on every use.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  scopes: ['openid', 'offline_access'],
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
  },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    RefreshToken: 86400,
    Grant: 86400,
    Interaction: 600,
    Session: 600,
  },
});
server.on('request', provider.callback());

process.stdout.write(`${JSON.stringify({ issuer, client_id: CLIENT_ID })}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
