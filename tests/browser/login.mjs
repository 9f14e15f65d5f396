// Person login in a real browser. Headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) fills in the test IdP's form; npm oauth4webapi (+ jose) is the client:
// discovery, PAR with private_key_jwt and a DPoP proof, PKCE S256, state and nonce, the
// authorization response, the code exchange, ID token / access token / userinfo checks, and a
// second login in the same browser that must be single sign-on (no form).
//
// Env: ISSUER, CLIENT_ID, CLIENT_JWK (the client's private JWK), REDIRECT_PORT (the redirect URI
// http://127.0.0.1:PORT/callback is registered for the client), SCOPE, PID (default
// 06828399789), ARTIFACTS_DIR (default ci-artifacts/ at the repository root), CHROMIUM
// (default /usr/bin/chromium). Prints `verified …` and exits 0, or exits 1 with the reason.
//
// Federation: with IDP (an upstream's name) and UPSTREAM (its origin), the browser meets the
// identity-provider choice page first, picks IDP, and logs in on the upstream's test IdP form;
// the tokens must then name IDP as the `idp`.
// Everything is loopback-only and every wait is bounded.
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'
import { chromium } from 'playwright-core'
import { createServer } from 'node:http'
import { createHash } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'

const TIMEOUT = 20_000
// A last resort: the whole script, however it hangs.
setTimeout(() => fail(new Error('the browser test did not finish within 150 s')), 150_000).unref()

function fail(err) {
  console.error(`FAILED: ${err?.stack ?? err}`)
  if (err?.cause) console.error('cause:', JSON.stringify(err.cause, null, 2))
  process.exit(1)
}
process.on('unhandledRejection', fail)

function need(name) {
  const v = process.env[name]
  if (!v) throw new Error(`${name} is not set`)
  return v
}
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`)
}
function equal(actual, expected, what) {
  const a = JSON.stringify(actual)
  const e = JSON.stringify(expected)
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`)
}
function withTimeout(promise, what) {
  let timer
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${TIMEOUT} ms: ${what}`)), TIMEOUT)
    }),
  ]).finally(() => clearTimeout(timer))
}

const issuer = new URL(need('ISSUER'))
const clientId = need('CLIENT_ID')
const jwk = JSON.parse(need('CLIENT_JWK'))
const redirectPort = Number(need('REDIRECT_PORT'))
const scope = need('SCOPE')
const pid = process.env.PID || '06828399789'
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium'
const artifacts =
  process.env.ARTIFACTS_DIR || fileURLToPath(new URL('../../ci-artifacts/', import.meta.url))
mkdirSync(artifacts, { recursive: true })
const redirectUri = `http://127.0.0.1:${redirectPort}/callback`
const idpName = process.env.IDP || 'testidp-oidc'
const formOrigin = process.env.UPSTREAM || issuer.origin
const prefix = process.env.IDP ? 'federated-' : ''
if (process.env.IDP) check(process.env.UPSTREAM, 'UPSTREAM is set with IDP')
check(issuer.hostname === '127.0.0.1', `the issuer ${issuer} is on loopback`)

// Every HTTP request of the client: plain http on loopback, bounded in time.
const http = () => ({ [oauth.allowInsecureRequests]: true, signal: AbortSignal.timeout(TIMEOUT) })

// ---- The client: discovery and client authentication ----
const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, http()))
check(as.pushed_authorization_request_endpoint, 'discovery has a PAR endpoint')
check(as.code_challenge_methods_supported?.includes('S256'), 'discovery lists PKCE S256')
check(as.dpop_signing_alg_values_supported?.includes('ES256'), 'discovery lists DPoP ES256')
check(as.authorization_response_iss_parameter_supported === true, 'discovery: RFC 9207 iss')
// require_auth_time: oauth4webapi then requires auth_time in the ID token.
const client = { client_id: clientId, require_auth_time: true }
const clientAuth = oauth.PrivateKeyJwt({ key: await jose.importJWK(jwk, jwk.alg), kid: jwk.kid })
const jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri), { timeoutDuration: TIMEOUT })

let nonceRetries = 0
/** Runs a DPoP request (request + process), once more after a use_dpop_nonce answer. */
async function withNonce(what, run) {
  try {
    return await run()
  } catch (err) {
    if (!oauth.isDPoPNonceError(err)) throw err
    nonceRetries++
    console.log(`${what}: use_dpop_nonce, retrying with the server's nonce`)
    return await run() // oauth4webapi has cached the DPoP-Nonce from the error answer
  }
}

// ---- The redirect URI: a tiny loopback server that records what the browser brings ----
let callbackWaiter = null
const callbacks = []
const callbackServer = createServer((req, res) => {
  const url = new URL(req.url, redirectUri)
  if (req.method !== 'GET' || url.pathname !== '/callback') {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found')
    return
  }
  const hit = { url, referer: req.headers.referer }
  callbacks.push(hit)
  const esc = (t) => t.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
  const names = esc([...url.searchParams.keys()].join(', '))
  res
    .writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      'referrer-policy': 'no-referrer',
    })
    .end(
      `<!doctype html><html lang="en"><meta charset="utf-8"><title>Acme EPJ: logged in</title>` +
        `<body style="font-family: system-ui, sans-serif; max-width: 32rem; margin: 3rem auto">` +
        `<h1>Acme EPJ (browser test client)</h1><p>The authorization response arrived at ` +
        `<code>${redirectUri}</code> with the parameters <strong>${names}</strong>.</p>` +
        `<p>iss = <code>${esc(url.searchParams.get('iss') ?? '')}</code></p></body></html>`,
    )
  callbackWaiter?.(hit)
})
await withTimeout(
  new Promise((resolve, reject) => {
    callbackServer.once('error', reject)
    callbackServer.listen(redirectPort, '127.0.0.1', resolve)
  }),
  `listening on 127.0.0.1:${redirectPort}`,
)
const nextCallback = () =>
  withTimeout(new Promise((resolve) => (callbackWaiter = resolve)), 'the redirect to the callback')

// ---- The browser ----
const browser = await chromium.launch({
  executablePath,
  headless: true,
  timeout: TIMEOUT,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-dev-shm-usage',
    '--no-proxy-server',
  ],
})
const context = await browser.newContext({ viewport: { width: 900, height: 640 } })
context.setDefaultTimeout(TIMEOUT)
context.setDefaultNavigationTimeout(TIMEOUT)
// Everything the browser asks for must be on loopback.
await context.route(
  (url) => !['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname),
  (route) => {
    console.error(`blocked a non-loopback request: ${route.request().url()}`)
    return route.abort()
  },
)
const page = await context.newPage()
const cspViolations = []
page.on('console', (m) => {
  if (/Content Security Policy|Refused to/i.test(m.text())) cspViolations.push(m.text())
})

/** The URLs of the redirect chain that ended in `response`, first to last. */
function chain(response) {
  const urls = []
  for (let r = response.request(); r; r = r.redirectedFrom()) urls.unshift(r.url())
  return urls
}

/** One login: PAR, the browser at the authorization endpoint, the code exchange and checks. */
async function login(run, { expectForm }) {
  const codeVerifier = oauth.generateRandomCodeVerifier()
  const state = oauth.generateRandomState()
  const nonce = oauth.generateRandomNonce()
  const keyPair = await oauth.generateKeyPair('ES256')
  const DPoP = oauth.DPoP(client, keyPair)
  const jkt = await jose.calculateJwkThumbprint(await jose.exportJWK(keyPair.publicKey))

  // PAR with private_key_jwt and DPoP (binds the code to the DPoP key: dpop_jkt).
  const params = new URLSearchParams({
    response_type: 'code',
    redirect_uri: redirectUri,
    scope,
    state,
    nonce,
    code_challenge: await oauth.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
  })
  const par = await withNonce(`${run}: PAR`, async () =>
    oauth.processPushedAuthorizationResponse(
      as,
      client,
      await oauth.pushedAuthorizationRequest(as, client, clientAuth, params, { ...http(), DPoP }),
    ),
  )
  const authorizeUrl = new URL(as.authorization_endpoint)
  authorizeUrl.searchParams.set('client_id', clientId)
  authorizeUrl.searchParams.set('request_uri', par.request_uri)

  // The browser.
  const arrived = nextCallback()
  arrived.catch(() => {}) // awaited below; no unhandled rejection if an earlier step fails
  const first = await page.goto(authorizeUrl.href)
  check(first, `${run}: a response to the authorization request`)
  let hit
  if (expectForm) {
    let shown = first
    if (process.env.IDP) {
      // The choice page: one link per identity provider, chosen by its name.
      const here = new URL(page.url())
      equal(`${here.origin}${here.pathname}`, `${issuer.origin}/login/idp`, `${run}: the choice page`)
      const choices = await page.locator('a[data-idp]').evaluateAll((as) => as.map((a) => a.dataset.idp))
      check(choices.includes(idpName) && choices.includes('testidp-oidc'), `choices: ${choices}`)
      await page.screenshot({ path: join(artifacts, 'idp-choice.png'), fullPage: true })
      const [upstreamForm] = await Promise.all([
        page.waitForNavigation(),
        page.locator(`a[data-idp="${idpName}"]`).click(),
      ])
      shown = upstreamForm
    }
    const url = new URL(page.url())
    equal(`${url.origin}${url.pathname}`, `${formOrigin}/testidp/login`, `${run}: the login page`)
    equal(shown.status(), 200, `${run}: login page status`)
    const redirects = chain(first)
    check(redirects[0].startsWith(as.authorization_endpoint), `${run}: started at authorize`)
    const headers = shown.headers()
    check(
      /(^|;)\s*frame-ancestors 'none'\s*(;|$)/.test(headers['content-security-policy'] ?? ''),
      `CSP with frame-ancestors 'none' (got ${headers['content-security-policy']})`,
    )
    equal(headers['x-frame-options'], 'DENY', 'X-Frame-Options')
    equal(headers['cache-control'], 'no-store', 'login page Cache-Control')
    equal(headers['referrer-policy'], 'no-referrer', 'login page Referrer-Policy')
    const txCookie = (await context.cookies(formOrigin)).find((c) => c.name === 'segl_tx')
    check(txCookie?.httpOnly, 'the segl_tx cookie is set, HttpOnly')
    equal(txCookie.sameSite, 'Lax', 'segl_tx SameSite')

    // The form: a labelled national-id field, hidden tx and csrf, a submit button.
    const pidField = page.locator('#pid')
    await pidField.waitFor({ state: 'visible' })
    const label = page.locator('label[for="pid"]')
    equal(await label.count(), 1, 'one <label for="pid">')
    const labelText = (await label.innerText()).trim()
    check(labelText.length > 0, 'the pid label has text')
    // The label is the field's accessible name: filling by label reaches #pid.
    equal(await page.getByLabel(labelText, { exact: true }).getAttribute('id'), 'pid', 'label → #pid')
    equal(await page.locator('input[type=hidden][name=tx]').count(), 1, 'hidden tx')
    equal(await page.locator('input[type=hidden][name=csrf]').count(), 1, 'hidden csrf')
    check(await page.locator('#login').isVisible(), 'the submit button #login is visible')
    const title = await page.title()
    await page.getByLabel(labelText, { exact: true }).fill(pid)
    await page.screenshot({ path: join(artifacts, `${prefix}login-page.png`), fullPage: true })
    console.log(`${run}: login page "${title}" at ${formOrigin}, label "${labelText}", screenshot ${prefix}login-page.png`)

    // Either the redirect to the client or the form again with an error (fail fast on that).
    await page.locator('#login').click()
    const atCallback = page.waitForURL((u) => u.href.startsWith(redirectUri)).then(() => 'callback')
    const refused = page.locator('#login-error').waitFor({ state: 'visible' }).then(() => 'error')
    refused.catch(() => {}) // the loser of the race rejects later (timeout or browser closed)
    atCallback.catch(() => {})
    const outcome = await Promise.race([atCallback, refused])
    if (outcome === 'error') {
      await page.screenshot({ path: join(artifacts, `${prefix}after-login.png`), fullPage: true })
      throw new Error(`the test IdP refused ${pid}: ${await page.locator('#login-error').innerText()}`)
    }
    hit = await arrived
    check(!hit.referer, `no Referer on the redirect to the client (got ${hit.referer})`)
    await page.waitForLoadState('load')
    await page.screenshot({ path: join(artifacts, `${prefix}after-login.png`), fullPage: true })
    for (const origin of new Set([issuer.origin, formOrigin])) {
      check((await context.cookies(origin)).every((c) => c.name !== 'segl_tx'), `segl_tx is cleared at ${origin}`)
    }
  } else {
    hit = await arrived
    check(page.url().startsWith(redirectUri), `${run}: the browser is at the callback (${page.url()})`)
    const redirects = chain(first)
    check(
      redirects.every((u) => !u.includes('/testidp/') && !u.includes('/login/idp')),
      `${run}: single sign-on without the form (${redirects.join(' → ')})`,
    )
    console.log(`${run}: single sign-on: ${redirects.map((u) => new URL(u).pathname).join(' → ')}`)
  }
  const session = (await context.cookies(issuer.origin)).filter((c) => c.name !== 'segl_tx')
  check(session.length > 0 && session.every((c) => c.httpOnly), 'an HttpOnly session cookie')

  // The authorization response: iss (RFC 9207) and state.
  equal(hit.url.searchParams.get('iss'), as.issuer, `${run}: iss in the authorization response`)
  const callbackParams = oauth.validateAuthResponse(as, client, hit.url, state)

  // The code exchange: PKCE and DPoP by the key used at PAR.
  let tokenResponse
  const tokens = await withNonce(`${run}: token`, async () => {
    tokenResponse = await oauth.authorizationCodeGrantRequest(
      as,
      client,
      clientAuth,
      callbackParams,
      redirectUri,
      codeVerifier,
      { ...http(), DPoP },
    )
    return oauth.processAuthorizationCodeResponse(as, client, tokenResponse, {
      expectedNonce: nonce,
      requireIdToken: true,
    })
  })
  // oauth4webapi checked the ID token's iss, aud, exp, iat, nonce and auth_time; its signature:
  await oauth.validateApplicationLevelSignature(as, tokenResponse, http())
  equal(tokens.token_type, 'dpop', `${run}: token_type`)

  // The access token, verified with jose against the JWKS.
  const at = await jose.jwtVerify(tokens.access_token, jwks, {
    issuer: as.issuer,
    audience: 'nhn:sfm',
    typ: 'at+jwt',
  })
  const a = at.payload
  equal(a.aud, 'nhn:sfm', 'access token aud')
  equal(a.client_id, clientId, 'access token client_id')
  equal(a.cnf?.jkt, jkt, 'access token cnf.jkt (the DPoP key used at PAR and token)')
  equal(a['helseid://claims/identity/pid'], pid, 'access token pid')
  equal(a['helseid://claims/identity/security_level'], '4', 'access token security_level')
  equal(a['helseid://claims/identity/assurance_level'], 'high', 'access token assurance_level')
  equal(a['helseid://claims/hpr/hpr_number'], '431001110', 'access token hpr_number')
  equal(a.name, 'Kvart Grevling', 'access token name')
  equal(a.idp, idpName, 'access token idp')
  check(typeof a.sub === 'string' && a.sub !== pid, 'access token sub is a pseudonym, not the pid')

  // The ID token, verified again with jose, claim by claim.
  const id = await jose.jwtVerify(tokens.id_token, jwks, { issuer: as.issuer, audience: clientId })
  const i = id.payload
  check(oauth.getValidatedIdTokenClaims(tokens)?.sub === i.sub, 'oauth4webapi validated the ID token')
  equal(i.aud, clientId, 'ID token aud')
  equal(i.nonce, nonce, 'ID token nonce')
  equal(i.idp, idpName, 'ID token idp')
  equal(i.amr, ['pwd'], 'ID token amr')
  equal(i.acr, 'Level4', 'ID token acr')
  check(typeof i.sid === 'string' && i.sid.length >= 16, 'ID token sid')
  const now = Math.floor(Date.now() / 1000)
  check(Number.isInteger(i.auth_time) && i.auth_time <= now + 5 && i.auth_time > now - 300, 'auth_time')
  equal(i['helseid://claims/identity/pid'], pid, 'ID token pid')
  equal(i.sub, a.sub, 'ID token sub = access token sub')
  const hashAlg = id.protectedHeader.alg === 'EdDSA' ? 'sha512' : `sha${id.protectedHeader.alg.slice(2)}`
  const digest = createHash(hashAlg).update(tokens.access_token).digest()
  equal(i.at_hash, digest.subarray(0, digest.length / 2).toString('base64url'), 'ID token at_hash')

  // userinfo with the DPoP-bound token (the proof carries ath).
  const info = await withNonce(`${run}: userinfo`, async () =>
    oauth.processUserInfoResponse(
      as,
      client,
      i.sub,
      await oauth.userInfoRequest(as, client, tokens.access_token, { ...http(), DPoP }),
    ),
  )
  equal(info.sub, i.sub, 'userinfo sub')
  const hpr = info['helseid://claims/hpr/hpr_details']
  check(hpr && typeof hpr === 'object', `userinfo has helseid://claims/hpr/hpr_details (${JSON.stringify(info)})`)
  equal(String(hpr.hpr_number), '431001110', 'userinfo hpr_details.hpr_number')
  console.log(`${run}: tokens, ID token and userinfo verified (sid ${i.sid})`)
  return { sub: i.sub, sid: i.sid, authTime: i.auth_time, jkt }
}

let failure
try {
  const first = await login('first login', { expectForm: true })
  const second = await login('second login', { expectForm: false })
  equal(second.sub, first.sub, 'the pseudonym is stable across logins')
  equal(second.sid, first.sid, 'single sign-on keeps the session id')
  equal(second.authTime, first.authTime, 'single sign-on keeps auth_time')
  check(second.jkt !== first.jkt, 'each login had its own DPoP key')
  check(cspViolations.length === 0, `no CSP violations in the browser: ${cspViolations.join(' | ')}`)
  equal(callbacks.length, 2, 'two authorization responses')
  console.log(
    `verified browser login${process.env.IDP ? ` through ${idpName} at ${formOrigin}` : ''} with ${browser.version()}: form, PAR+PKCE+DPoP code flow, ` +
      `tokens, userinfo and single sign-on (${nonceRetries} DPoP nonce round trips)`,
  )
} catch (err) {
  failure = err
  await page.screenshot({ path: join(artifacts, `${prefix}failure.png`), fullPage: true }).catch(() => {})
  console.error(`the browser was at ${page.url()}`)
} finally {
  await browser.close().catch(() => {})
  callbackServer.close()
}
if (failure) fail(failure)
process.exit(0)
