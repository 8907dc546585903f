// A real OAuth 2.0 authorization server for credbridge's tests: the `oidc-provider` npm package,
// configured the way the tests need it, run by credbridge.local.oauth2provider.
//
// Usage: node provider.mjs CONFIG.json
//
// CONFIG (written by the Python side) names the installed package's entry module, the port, the
// TLS certificate, the clients, the token lifetimes and a state file. The provider keeps its
// grants and tokens in that file, so stopping and starting it (the "provider down" tests) loses
// nothing, as a real provider's database would not.
//
// Besides the provider's own endpoints (/auth, /token, /token/revocation, /interaction/...), it
// serves two test-only endpoints under /_control/ (loopback only, like the whole server):
//   POST /_control/fault  {"mode": "none" | "error" | "throttle" | "hang", "status": 503, "retryAfter": 5}
//        makes the token endpoint fail: answer `status`, answer 429 with Retry-After, or never answer
//   GET  /_control/stats  counts of token requests answered, by grant type and client, and by outcome
import fs from 'node:fs';
import https from 'node:https';
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const { default: Provider } = await import(pathToFileURL(config.module).href);

// ---- state that survives a restart -------------------------------------------------------------

const stateFile = config.stateFile;
let store = {};
if (fs.existsSync(stateFile)) {
  store = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
}

function persist() {
  const temporary = `${stateFile}.tmp`;
  fs.writeFileSync(temporary, JSON.stringify(store));
  fs.renameSync(temporary, stateFile);
}

function now() {
  return Math.floor(Date.now() / 1000);
}

function live(entry) {
  return entry && (entry.expiresAt === null || entry.expiresAt > now());
}

class FileAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    store[this.key(id)] = { payload, expiresAt: expiresIn ? now() + expiresIn : null };
    persist();
  }

  async find(id) {
    const entry = store[this.key(id)];
    return live(entry) ? entry.payload : undefined;
  }

  async findByUid(uid) {
    for (const [key, entry] of Object.entries(store)) {
      if (key.startsWith(`${this.model}:`) && live(entry) && entry.payload.uid === uid) {
        return entry.payload;
      }
    }
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [key, entry] of Object.entries(store)) {
      if (key.startsWith(`${this.model}:`) && live(entry) && entry.payload.userCode === userCode) {
        return entry.payload;
      }
    }
    return undefined;
  }

  async consume(id) {
    const entry = store[this.key(id)];
    if (entry) {
      entry.payload.consumed = now();
      persist();
    }
  }

  async destroy(id) {
    delete store[this.key(id)];
    persist();
  }

  async revokeByGrantId(grantId) {
    for (const [key, entry] of Object.entries(store)) {
      if (entry.payload && entry.payload.grantId === grantId) {
        delete store[key];
      }
    }
    persist();
  }
}

// ---- the provider ------------------------------------------------------------------------------

const rotating = new Set(config.clients.filter((c) => c.rotateRefreshToken).map((c) => c.client_id));
const omitting = new Set(config.clients.filter((c) => c.omitRefreshTokenOnRefresh).map((c) => c.client_id));
const clients = config.clients.map((c) => {
  const copy = { ...c };
  delete copy.rotateRefreshToken;
  delete copy.omitRefreshTokenOnRefresh;
  return copy;
});

const provider = new Provider(config.issuer, {
  adapter: FileAdapter,
  clients,
  jwks: config.jwks,
  cookies: { keys: config.cookieKeys },
  scopes: config.scopes,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
  },
  // Issue a refresh token to every client allowed the grant, as Google does with access_type=offline:
  // the default would ask for the offline_access scope and prompt=consent.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: (ctx) => rotating.has(ctx.oidc.client.clientId),
  ttl: {
    AccessToken: config.accessTokenSeconds,
    ClientCredentials: config.accessTokenSeconds,
    AuthorizationCode: 120,
    RefreshToken: config.refreshTokenSeconds,
    Grant: config.refreshTokenSeconds,
    Interaction: 600,
    Session: 3600,
    IdToken: config.accessTokenSeconds,
  },
});
provider.proxy = false;

const stats = { token: {} };

function count(grantType, clientId, outcome) {
  const name = `${grantType || 'unknown'}/${clientId || 'unknown'}/${outcome}`;
  stats.token[name] = (stats.token[name] || 0) + 1;
}

// Counts token requests and, for the clients that say so, leaves the refresh token out of
// refresh answers the way Google does (the client must keep the one it has).
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/token' && ctx.method === 'POST') {
    const params = ctx.oidc && ctx.oidc.params ? ctx.oidc.params : {};
    const clientId = ctx.oidc && ctx.oidc.client ? ctx.oidc.client.clientId : undefined;
    const outcome = ctx.status === 200 ? 'ok' : (ctx.body && ctx.body.error) || String(ctx.status);
    count(params.grant_type, clientId, outcome);
    if (ctx.status === 200 && params.grant_type === 'refresh_token' && omitting.has(clientId) && ctx.body) {
      delete ctx.body.refresh_token;
    }
  }
});

const handle = provider.callback();
let fault = { mode: 'none' };

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function serve(req, res) {
  const url = new URL(req.url, config.issuer);
  if (url.pathname === '/_control/fault' && req.method === 'POST') {
    fault = JSON.parse((await readBody(req)) || '{}');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(fault));
    return;
  }
  if (url.pathname === '/_control/stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(stats));
    return;
  }
  if (url.pathname === '/token' && fault.mode !== 'none') {
    await readBody(req);
    count('fault', undefined, fault.mode);
    if (fault.mode === 'hang') {
      return; // never answers: the client's timeout must end the request
    }
    if (fault.mode === 'throttle') {
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': String(fault.retryAfter ?? 5) });
      res.end(JSON.stringify({ error: 'slow_down' }));
      return;
    }
    res.writeHead(fault.status || 503, { 'content-type': 'text/html' });
    res.end('<html><body>Service Unavailable</body></html>');
    return;
  }
  handle(req, res);
}

const server = config.tls
  ? https.createServer({ cert: fs.readFileSync(config.tls.cert), key: fs.readFileSync(config.tls.key) }, serve)
  : http.createServer(serve);
server.listen(config.port, '127.0.0.1', () => {
  console.log(`oauth2 provider listening on ${config.issuer} (state ${path.basename(stateFile)})`);
});

function stop() {
  server.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
