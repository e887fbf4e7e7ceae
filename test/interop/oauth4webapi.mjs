// Interoperability test: Ward against oauth4webapi (https://github.com/panva/oauth4webapi),
// an independent, widely used OAuth 2 / OpenID Connect client library with DPoP support.
//
// Everything protocol-related goes through the library's own API: discovery, PKCE, the
// authorization response check (state and RFC 9207 iss), the DPoP handle (ES256 key pair, proof
// per request, server nonces and the use_dpop_nonce retry), token, userinfo, introspection and
// revocation requests and their response processing. Only the sign-in pages are driven by hand
// with fetch, as a browser would: hidden form inputs, cookies kept manually, no redirect
// followed, the code taken from the 303 Location.
//
// Environment:
//   WARD_ISSUER               issuer URL of a running Ward (required)
//   WARD_SPA_CLIENT_ID        public DPoP client with authorization_code + refresh_token (default "spa")
//   WARD_SERVICE_CLIENT_ID    confidential client_secret_basic client with client_credentials (default "service")
//   WARD_SERVICE_SECRET       its secret (required)
//   WARD_REDIRECT_URI         redirect URI registered for the SPA client (required)
//   WARD_USERNAME             user without MFA (default "bob")
//   WARD_PASSWORD             that user's password (required)
//   WARD_EXPECT_NONCE_RETRY   "1" when Ward runs with dpop.require_nonce: then the first proof
//                             of each new DPoP key must be answered with use_dpop_nonce and the
//                             library must recover by retrying with the nonce
//   WARD_NONCE_LIFETIME_MS    when set (Ward's dpop.nonce_lifetime, keep it short), also check
//                             that userinfo recovers once the nonce the library cached from the
//                             token endpoint has expired (RFC 9449 §9: 401 + use_dpop_nonce)
//
// Run: node oauth4webapi.mjs   (interop_test.go does this against a wardtest instance)
// Prints one line per check and a final "N passed, N failed"; exits 1 if anything failed.

import assert from 'node:assert/strict'
import * as oauth from 'oauth4webapi'

function env(name, fallback) {
  const v = process.env[name] ?? fallback
  if (v === undefined || v === '') {
    console.error(`missing environment variable ${name}`)
    process.exit(2)
  }
  return v
}

const issuer = new URL(env('WARD_ISSUER'))
const spaID = env('WARD_SPA_CLIENT_ID', 'spa')
const serviceID = env('WARD_SERVICE_CLIENT_ID', 'service')
const serviceSecret = env('WARD_SERVICE_SECRET')
const redirectURI = env('WARD_REDIRECT_URI')
const username = env('WARD_USERNAME', 'bob')
const password = env('WARD_PASSWORD')
const expectNonceRetry = process.env.WARD_EXPECT_NONCE_RETRY === '1'
const nonceLifetimeMs = Number(process.env.WARD_NONCE_LIFETIME_MS ?? 0)

// Plain http:// is only for the local test instance.
const http = issuer.protocol === 'http:' ? { [oauth.allowInsecureRequests]: true } : {}

// ---------------------------------------------------------------------------------------------
// A tiny sequential runner: later steps use what earlier ones produced, so a failed step skips
// the steps that depend on it.

let passed = 0
let failed = 0
let skipped = 0
const done = new Set()

async function step(name, needs, fn) {
  const missing = needs.filter((n) => !done.has(n))
  if (missing.length > 0) {
    skipped++
    failed++
    console.log(`SKIP ${name} (needs ${missing.join(', ')})`)
    return
  }
  const t0 = Date.now()
  try {
    await fn()
    passed++
    done.add(name)
    console.log(`PASS ${name} (${Date.now() - t0} ms)`)
  } catch (err) {
    failed++
    console.log(`FAIL ${name}: ${describe(err)}`)
  }
}

function describe(err) {
  const parts = [err?.stack ?? String(err)]
  if (err?.code) parts.push(`code=${err.code}`)
  if (err?.error) parts.push(`error=${err.error} ${err.error_description ?? ''}`)
  if (err?.status) parts.push(`status=${err.status}`)
  if (err?.cause !== undefined) {
    try {
      parts.push(`cause=${JSON.stringify(err.cause)}`)
    } catch {
      parts.push(`cause=${String(err.cause)}`)
    }
  }
  return parts.join('\n    ')
}

// ---------------------------------------------------------------------------------------------
// use_dpop_nonce, the way the library documents it: process the response; if the error says
// the server wants a (fresh) nonce, the DPoP handle has already cached the DPoP-Nonce of that
// response, so the same request is simply sent again, once.

let nonceRetries = 0

async function withNonceRetry(send, process) {
  try {
    return await process(await send())
  } catch (err) {
    if (!oauth.isDPoPNonceError(err)) throw err
    nonceRetries++
    return await process(await send())
  }
}

// ---------------------------------------------------------------------------------------------
// The browser side of sign-in, without the library (it has no part in it).

class Browser {
  cookies = new Map()

  async fetch(url, init = {}) {
    const headers = new Headers(init.headers)
    if (this.cookies.size > 0) {
      headers.set('cookie', [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '))
    }
    const res = await fetch(url, { ...init, headers, redirect: 'manual' })
    for (const sc of res.headers.getSetCookie()) {
      const [pair, ...attrs] = sc.split(';')
      const i = pair.indexOf('=')
      const name = pair.slice(0, i).trim()
      const value = pair.slice(i + 1).trim()
      const gone = attrs.some((a) => /^\s*max-age\s*=\s*(0|-\d+)\s*$/i.test(a)) || value === ''
      if (gone) this.cookies.delete(name)
      else this.cookies.set(name, value)
    }
    return res
  }
}

function decodeEntities(s) {
  return s.replace(/&(#\d+|#x[0-9a-f]+|amp|lt|gt|quot|apos);/gi, (m, e) => {
    const named = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[e.toLowerCase()]
    if (named) return named
    return String.fromCodePoint(e[1].toLowerCase() === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10))
  })
}

function hiddenInputs(html) {
  const form = new URLSearchParams()
  for (const m of html.matchAll(/<input\b[^>]*>/gi)) {
    const attr = (n) => m[0].match(new RegExp(`\\b${n}="([^"]*)"`, 'i'))?.[1]
    if (attr('type')?.toLowerCase() === 'hidden' && attr('name')) {
      form.set(attr('name'), decodeEntities(attr('value') ?? ''))
    }
  }
  return form
}

function formAction(html, base) {
  const action = html.match(/<form\b[^>]*\baction="([^"]*)"/i)?.[1]
  assert.ok(action, 'sign-in page has no form action')
  return new URL(decodeEntities(action), base)
}

// signIn opens the authorization URL, signs in (if the page asks) and returns the URL the
// browser is finally sent to (the client's redirect URI with the authorization response).
async function signIn(browser, authorizationURL) {
  let res = await browser.fetch(authorizationURL)
  if (res.status === 303) return new URL(res.headers.get('location'))
  let html = await res.text()
  assert.equal(res.status, 200, `GET /authorize: status ${res.status}: ${html.slice(0, 300)}`)
  assert.match(html, /name="password"/, 'GET /authorize did not show the sign-in form')
  const form = hiddenInputs(html)
  assert.ok(form.get('csrf') && form.get('req'), `sign-in form lacks csrf/req: ${[...form.keys()]}`)
  form.set('username', username)
  form.set('password', password)
  res = await browser.fetch(formAction(html, res.url || authorizationURL), { method: 'POST', body: form })
  if (res.status !== 303) {
    html = await res.text()
    assert.fail(`POST /login: status ${res.status} (a user with MFA? use one without): ${html.slice(0, 300)}`)
  }
  return new URL(res.headers.get('location'))
}

// ---------------------------------------------------------------------------------------------

const spa = { client_id: spaID, token_endpoint_auth_method: 'none' }
const service = { client_id: serviceID }
const serviceAuth = oauth.ClientSecretBasic(serviceSecret)

const state = {}

async function authorize(as, DPoP, extra = {}) {
  const codeVerifier = oauth.generateRandomCodeVerifier()
  const codeChallenge = await oauth.calculatePKCECodeChallenge(codeVerifier)
  const st = oauth.generateRandomState()
  const nonce = oauth.generateRandomNonce()
  const u = new URL(as.authorization_endpoint)
  u.search = new URLSearchParams({
    response_type: 'code',
    client_id: spa.client_id,
    redirect_uri: redirectURI,
    scope: 'openid profile email offline_access',
    state: st,
    nonce,
    code_challenge: codeChallenge,
    code_challenge_method: 'S256',
    dpop_jkt: await DPoP.calculateThumbprint(),
    ...extra,
  }).toString()
  const callback = await signIn(new Browser(), u)
  assert.equal(`${callback.origin}${callback.pathname}`, redirectURI, 'redirected somewhere else than redirect_uri')
  return { callback, st, nonce, codeVerifier }
}

async function redeem(as, DPoP, a) {
  const params = oauth.validateAuthResponse(as, spa, a.callback, a.st)
  return withNonceRetry(
    () => oauth.authorizationCodeGrantRequest(as, spa, oauth.None(), params, redirectURI, a.codeVerifier, { DPoP, ...http }),
    (res) => oauth.processAuthorizationCodeResponse(as, spa, res, { expectedNonce: a.nonce, requireIdToken: true }),
  )
}

await step('discovery: OpenID Connect (.well-known/openid-configuration)', [], async () => {
  const res = await oauth.discoveryRequest(issuer, { algorithm: 'oidc', ...http })
  const as = await oauth.processDiscoveryResponse(issuer, res)
  for (const k of ['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'jwks_uri', 'introspection_endpoint', 'revocation_endpoint']) {
    assert.ok(as[k], `metadata lacks ${k}`)
  }
  assert.ok(as.dpop_signing_alg_values_supported?.includes('ES256'), 'ES256 not in dpop_signing_alg_values_supported')
  assert.deepEqual(as.code_challenge_methods_supported, ['S256'])
  assert.equal(as.authorization_response_iss_parameter_supported, true)
  state.as = as
})

await step('discovery: RFC 8414 (.well-known/oauth-authorization-server)', [], async () => {
  const res = await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...http })
  const as = await oauth.processDiscoveryResponse(issuer, res)
  assert.equal(as.token_endpoint, state.as?.token_endpoint)
  assert.equal(as.authorization_response_iss_parameter_supported, true)
})

const discovered = 'discovery: OpenID Connect (.well-known/openid-configuration)'

await step('authorization code + PKCE + DPoP (public client, dpop_jkt, iss check)', [discovered], async () => {
  const as = state.as
  const keyPair = await oauth.generateKeyPair('ES256')
  const DPoP = oauth.DPoP(spa, keyPair)
  state.keyPair = keyPair
  state.DPoP = DPoP
  state.jkt = await DPoP.calculateThumbprint()
  const before = nonceRetries

  const a = await authorize(as, DPoP)
  assert.equal(a.callback.searchParams.get('iss'), as.issuer, 'authorization response without RFC 9207 iss')
  // The library's own RFC 9207 / state checks must reject a mix-up and a wrong state.
  assert.throws(() => oauth.validateAuthResponse({ ...as, issuer: 'https://attacker.example' }, spa, a.callback, a.st), /iss/)
  assert.throws(() => oauth.validateAuthResponse(as, spa, a.callback, 'another-state'), /state/)

  const tokens = await redeem(as, DPoP, a)
  assert.equal(tokens.token_type, 'dpop')
  assert.ok(tokens.refresh_token, 'no refresh token for offline_access')
  const idt = oauth.getValidatedIdTokenClaims(tokens)
  assert.equal(idt.iss, as.issuer)
  assert.equal(idt.aud, spa.client_id)
  assert.equal(idt.nonce, a.nonce)
  const at = JSON.parse(Buffer.from(tokens.access_token.split('.')[1], 'base64url'))
  assert.equal(at.cnf?.jkt, state.jkt, 'access token not bound to the DPoP key (cnf.jkt)')
  if (expectNonceRetry) assert.ok(nonceRetries > before, 'dpop.require_nonce is on, yet no use_dpop_nonce retry happened')
  state.tokens = tokens
  state.sub = idt.sub
})

const codeFlow = 'authorization code + PKCE + DPoP (public client, dpop_jkt, iss check)'

await step('authorization code: another DPoP key than dpop_jkt is refused', [codeFlow], async () => {
  const as = state.as
  const a = await authorize(as, state.DPoP)
  const other = oauth.DPoP(spa, await oauth.generateKeyPair('ES256'))
  await assert.rejects(redeem(as, other, a), (err) => err.error === 'invalid_grant')
})

await step('userinfo with the DPoP-bound access token', [codeFlow], async () => {
  const { as, DPoP, tokens } = state
  const info = await withNonceRetry(
    () => oauth.userInfoRequest(as, spa, tokens.access_token, { DPoP, ...http }),
    (res) => oauth.processUserInfoResponse(as, spa, state.sub, res),
  )
  assert.equal(info.sub, state.sub)
  assert.equal(info.preferred_username, username)
  // Another key cannot use the token (that is the point of DPoP).
  const thief = oauth.DPoP(spa, await oauth.generateKeyPair('ES256'))
  await assert.rejects(
    (async () => oauth.processUserInfoResponse(as, spa, state.sub, await oauth.userInfoRequest(as, spa, tokens.access_token, { DPoP: thief, ...http })))(),
    (err) => err instanceof oauth.WWWAuthenticateChallengeError && err.cause.some((c) => c.scheme === 'dpop'),
  )
})

if (nonceLifetimeMs > 0) {
  await step('userinfo after the cached DPoP nonce expired (RFC 9449 §9)', [codeFlow], async () => {
    // The DPoP handle keeps the nonce of the token response per origin and sends it to
    // userinfo (same origin). Once Ward no longer accepts it, a resource must answer
    // 401 + WWW-Authenticate: DPoP error="use_dpop_nonce" + a fresh DPoP-Nonce (RFC 9449 §9,
    // §7.1) so that the client can retry; anything else strands the client until its next
    // token request although its access token is still valid.
    const { as, DPoP, tokens } = state
    await new Promise((r) => setTimeout(r, nonceLifetimeMs + 1500))
    const before = nonceRetries
    let info
    try {
      info = await withNonceRetry(
        () => oauth.userInfoRequest(as, spa, tokens.access_token, { DPoP, ...http }),
        (res) => oauth.processUserInfoResponse(as, spa, state.sub, res),
      )
    } catch (err) {
      const ch = err instanceof oauth.WWWAuthenticateChallengeError ? JSON.stringify(err.cause) : ''
      assert.fail(
        `userinfo with an expired nonce: HTTP ${err.status} ${err.error ?? ''} ${ch} ` +
          '(the access token is valid; RFC 9449 §9 wants 401, WWW-Authenticate: DPoP error="use_dpop_nonce" and a DPoP-Nonce header, ' +
          'which oauth4webapi retries)',
      )
    }
    assert.equal(info.sub, state.sub)
    assert.equal(nonceRetries, before + 1, 'expected exactly one use_dpop_nonce retry')
  })
}

await step('refresh with rotation; the rotated refresh token is then refused', [codeFlow], async () => {
  const { as, DPoP } = state
  const old = state.tokens.refresh_token
  const refreshed = await withNonceRetry(
    () => oauth.refreshTokenGrantRequest(as, spa, oauth.None(), old, { DPoP, ...http }),
    (res) => oauth.processRefreshTokenResponse(as, spa, res),
  )
  assert.equal(refreshed.token_type, 'dpop')
  assert.ok(refreshed.refresh_token, 'no new refresh token')
  assert.notEqual(refreshed.refresh_token, old, 'refresh token not rotated')
  assert.notEqual(refreshed.access_token, state.tokens.access_token)
  // The old one is spent (and its reuse ends the session, RFC 9700 §4.14.2).
  await assert.rejects(
    withNonceRetry(
      () => oauth.refreshTokenGrantRequest(as, spa, oauth.None(), old, { DPoP, ...http }),
      (res) => oauth.processRefreshTokenResponse(as, spa, res),
    ),
    (err) => err instanceof oauth.ResponseBodyError && err.error === 'invalid_grant' && err.status === 400,
  )
  await assert.rejects(
    withNonceRetry(
      () => oauth.refreshTokenGrantRequest(as, spa, oauth.None(), refreshed.refresh_token, { DPoP, ...http }),
      (res) => oauth.processRefreshTokenResponse(as, spa, res),
    ),
    (err) => err.error === 'invalid_grant',
    'reuse of a rotated refresh token must revoke the whole session',
  )
})

await step('client_credentials with DPoP (confidential client, client_secret_basic)', [discovered], async () => {
  const as = state.as
  const DPoP = oauth.DPoP(service, await oauth.generateKeyPair('ES256'))
  const before = nonceRetries
  const tokens = await withNonceRetry(
    () => oauth.clientCredentialsGrantRequest(as, service, serviceAuth, { scope: 'docs.read' }, { DPoP, ...http }),
    (res) => oauth.processClientCredentialsResponse(as, service, res),
  )
  assert.equal(tokens.token_type, 'dpop')
  assert.equal(tokens.scope, 'docs.read')
  assert.equal(tokens.refresh_token, undefined)
  const at = JSON.parse(Buffer.from(tokens.access_token.split('.')[1], 'base64url'))
  assert.equal(at.cnf?.jkt, await DPoP.calculateThumbprint())
  if (expectNonceRetry) assert.ok(nonceRetries > before, 'dpop.require_nonce is on, yet no use_dpop_nonce retry happened')
  const info = await oauth.processIntrospectionResponse(as, service, await oauth.introspectionRequest(as, service, serviceAuth, tokens.access_token, http))
  assert.equal(info.active, true)
  assert.equal(info.client_id, service.client_id)
  assert.equal(info.token_type, 'DPoP')
  assert.equal(info.cnf?.jkt, await DPoP.calculateThumbprint())
})

await step('introspection (by service) and revocation (by the token\'s client)', [codeFlow], async () => {
  // The first session ended with the refresh-token reuse above; sign in again with the same key.
  const { as, DPoP } = state
  const tokens = await redeem(as, DPoP, await authorize(as, DPoP))
  const introspect = async (token) =>
    oauth.processIntrospectionResponse(as, service, await oauth.introspectionRequest(as, service, serviceAuth, token, http))

  const info = await introspect(tokens.access_token)
  assert.equal(info.active, true)
  assert.equal(info.token_type, 'DPoP')
  assert.equal(info.client_id, spa.client_id)
  assert.equal(info.sub, state.sub)
  assert.equal(info.cnf?.jkt, state.jkt, 'introspection cnf.jkt differs from the DPoP key thumbprint')
  assert.equal(info.username, username)

  // RFC 7009 by the public client that owns the token (client_id in the body).
  // A DPoP-bound token is revoked only with a proof of its key: the token
  // alone (a copy) is refused, and nothing changes.
  await assert.rejects(
    (async () => oauth.processRevocationResponse(await oauth.revocationRequest(as, spa, oauth.None(), tokens.access_token, http)))(),
    (err) => err instanceof oauth.ResponseBodyError && err.error === 'invalid_dpop_proof',
  )
  assert.equal((await introspect(tokens.access_token)).active, true, 'a revocation without the key took effect')
  // The library sends no proof to the revocation endpoint by itself; its
  // DPoP handle makes one for the request's headers.
  const revocationURL = new URL(as.revocation_endpoint)
  await withNonceRetry(
    async () => {
      const headers = new Headers()
      await DPoP.addProof(revocationURL, headers, 'POST')
      const res = await oauth.revocationRequest(as, spa, oauth.None(), tokens.access_token, { ...http, headers })
      DPoP.cacheNonce(res, revocationURL)
      return res
    },
    (res) => oauth.processRevocationResponse(res),
  )
  assert.equal((await introspect(tokens.access_token)).active, false, 'revoked access token still active')
  // Revoking an access token ends the client's grant, refresh token included.
  await assert.rejects(
    withNonceRetry(
      () => oauth.refreshTokenGrantRequest(as, spa, oauth.None(), tokens.refresh_token, { DPoP, ...http }),
      (res) => oauth.processRefreshTokenResponse(as, spa, res),
    ),
    (err) => err.error === 'invalid_grant',
  )
  // And userinfo answers with a DPoP challenge.
  await assert.rejects(
    (async () => oauth.processUserInfoResponse(as, spa, state.sub, await oauth.userInfoRequest(as, spa, tokens.access_token, { DPoP, ...http })))(),
    (err) => err instanceof oauth.WWWAuthenticateChallengeError && err.cause.some((c) => c.scheme === 'dpop' && c.parameters.error === 'invalid_token'),
  )
})

console.log(`oauth4webapi: ${nonceRetries} use_dpop_nonce retries`)
console.log(`${passed} passed, ${failed} failed${skipped ? ` (${skipped} skipped)` : ''}`)
process.exit(failed > 0 ? 1 : 0)
