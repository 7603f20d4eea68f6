// A real OpenID provider (the npm `oidc-provider` package) for the gateway's integration
// tests. Started by tests/support/oidc_op.py; configured only through the environment:
//
//   OP_PORT                      port to listen on (127.0.0.1 only)
//   OP_CLIENT_ID / OP_CLIENT_SECRET
//   OP_REDIRECT_URIS             comma-separated; loopback http URIs match any port (RFC 8252
//                                section 7.3) because the client is registered as "native"
//   OP_POST_LOGOUT_REDIRECT_URIS comma-separated (optional)
//
// Employees come from employees.json (keyed by the username typed on the login form).
// Interactions are our own two routes instead of oidc-provider's devInteractions, so a test
// can sign in with plain HTTP: GET /interaction/:uid shows a form, POST
// /interaction/:uid/login with `username` finishes the login prompt. The consent prompt
// (which oidc-provider always raises for native clients) is granted at once, as for a
// first-party application: GET /interaction/:uid answers it with the redirect onwards.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === '') {
    console.error(`missing environment variable ${name}`);
    process.exit(2);
  }
  return value;
};

const port = Number(env('OP_PORT'));
const issuer = `http://127.0.0.1:${port}`;
const list = (value) => value.split(',').map((s) => s.trim()).filter(Boolean);

const employees = JSON.parse(readFileSync(new URL('./employees.json', import.meta.url), 'utf8'));
const bySub = new Map(Object.values(employees).map((e) => [e.sub, e]));

const SCOPES = 'openid email profile groups employee';

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'op-key-1', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: env('OP_CLIENT_ID'),
    client_secret: env('OP_CLIENT_SECRET'),
    application_type: 'native',
    redirect_uris: list(env('OP_REDIRECT_URIS')),
    post_logout_redirect_uris: list(process.env.OP_POST_LOGOUT_REDIRECT_URIS ?? ''),
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name'],
    groups: ['groups'],
    employee: ['employee_number'],
  },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true },
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(_ctx, sub) {
    const employee = bySub.get(sub);
    if (!employee) return undefined;
    return {
      accountId: sub,
      async claims() {
        const { sub: _ignored, ...rest } = employee;
        return { sub, ...rest };
      },
    };
  },
});

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(uid, message) {
  const options = Object.keys(employees)
    .map((u) => `<li>${escape(u)}: ${escape(employees[u].name)}</li>`).join('');
  return `<!doctype html><title>Sign in</title>
<p>${escape(message)}</p><ul>${options}</ul>
<form method="post" action="/interaction/${escape(uid)}/login">
<input name="username" autofocus><button type="submit">Sign in</button></form>`;
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 10000) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

async function interaction(req, res, url) {
  const match = url.pathname.match(/^\/interaction\/([\w-]+)(\/login)?$/);
  if (!match) {
    res.writeHead(404).end();
    return;
  }
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== match[1]) {
    res.writeHead(400, { 'content-type': 'text/plain' }).end('unexpected interaction');
    return;
  }
  if (details.prompt.name === 'consent' && req.method === 'GET' && !match[2]) {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    grant.addOIDCScope(SCOPES);
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } },
      { mergeWithLastSubmission: true });
    return;
  }
  if (details.prompt.name !== 'login') {
    res.writeHead(400, { 'content-type': 'text/plain' }).end('unexpected interaction');
    return;
  }
  if (req.method === 'GET' && !match[2]) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
      .end(loginPage(details.uid, 'Choose a demo employee'));
    return;
  }
  if (req.method === 'POST' && match[2]) {
    const form = await readForm(req);
    const employee = employees[form.get('username') ?? ''];
    if (!employee) {
      res.writeHead(400, { 'content-type': 'text/html; charset=utf-8' })
        .end(loginPage(details.uid, 'Unknown employee'));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: employee.sub } },
      { mergeWithLastSubmission: false });
    return;
  }
  res.writeHead(405).end();
}

const handler = provider.callback();
const server = createServer((req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname.startsWith('/interaction/')) {
    interaction(req, res, url).catch((err) => {
      console.error('interaction failed:', err.message);
      if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' }).end('interaction failed');
    });
    return;
  }
  handler(req, res);
});

server.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
