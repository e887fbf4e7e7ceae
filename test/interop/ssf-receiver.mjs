// Interoperability test: an independent OpenID Shared Signals (SSF 1.0) receiver, written with
// the npm library jose (https://github.com/panva/jose) and Node's own http and fetch, against
// Ward's transmitter. Nothing here comes from Ward: it reads the transmitter configuration,
// gets an access token with the client credentials grant, creates a push stream served by its
// own HTTP server on 127.0.0.1 and a poll stream, passes verification on both, asks the Go test
// (over a small control endpoint) to make a change in Ward, and checks that the CAEP SETs that
// arrive verify with jose.jwtVerify against the transmitter's JWKS (typ secevent+jwt, ES256,
// iss, aud) and carry the expected event.
//
// Environment:
//   WARD_ISSUER             issuer URL of a running Ward (required)
//   WARD_SSF_CLIENT_ID      a client_credentials client with scopes ssf.manage ssf.poll (required)
//   WARD_SSF_CLIENT_SECRET  its secret (required)
//   WARD_CONTROL_URL        the Go test's control endpoint: POST <url>?kind=credential-change or
//                           ?kind=session-revoked makes Ward emit that event (required)
//
// Run: node ssf-receiver.mjs   (ssf_test.go does this against a wardtest instance)
// Prints one line per check and a final "N passed, N failed"; exits 1 if anything failed.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import * as jose from 'jose'

function env(name) {
  const v = process.env[name]
  if (!v) {
    console.error(`missing environment variable ${name}`)
    process.exit(2)
  }
  return v
}

const issuer = env('WARD_ISSUER')
const clientID = env('WARD_SSF_CLIENT_ID')
const clientSecret = env('WARD_SSF_CLIENT_SECRET')
const controlURL = env('WARD_CONTROL_URL')

const PUSH = 'urn:ietf:rfc:8935'
const POLL = 'urn:ietf:rfc:8936'
const CAEP = 'https://schemas.openid.net/secevent/caep/event-type/'
const SSF = 'https://schemas.openid.net/secevent/ssf/event-type/'

// ---------------------------------------------------------------------------------------------
// Sequential runner: a failed step skips the steps that need it.

let passed = 0
let failed = 0
const done = new Set()

async function step(name, needs, fn) {
  const missing = needs.filter((n) => !done.has(n))
  if (missing.length > 0) {
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
    console.log(`FAIL ${name}: ${err?.stack ?? err}`)
  }
}

async function json(resp) {
  const text = await resp.text()
  try {
    return JSON.parse(text)
  } catch {
    throw new Error(`status ${resp.status}: not JSON: ${text.slice(0, 200)}`)
  }
}

// ---------------------------------------------------------------------------------------------
// State shared by the steps.

let config // transmitter configuration
let jwks // jose remote key set from jwks_uri
let token // access token
let pushStream
let pollStream
const pushSecret = 'Bearer ' + randomBytes(24).toString('base64url')
const received = [] // verified SETs from push: { payload, header }
let waiters = []

async function api(method, path, body, tok = token) {
  const headers = { accept: 'application/json' }
  if (tok) headers.authorization = `Bearer ${tok}`
  if (body !== undefined) headers['content-type'] = 'application/json'
  return fetch(path.startsWith('http') ? path : new URL(path, issuer), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  })
}

// verifySET checks a SET the way SSF 1.0 §4 and RFC 8417 ask, with jose.
async function verifySET(set, audience) {
  const { payload, protectedHeader } = await jose.jwtVerify(set, jwks, {
    issuer: config.issuer,
    audience,
    typ: 'secevent+jwt',
    algorithms: ['ES256'],
  })
  assert.equal(protectedHeader.alg, 'ES256')
  assert.ok(protectedHeader.kid, 'kid header')
  assert.equal(payload.sub, undefined, 'a SET has no sub claim')
  assert.equal(payload.exp, undefined, 'a SET has no exp claim')
  assert.ok(typeof payload.jti === 'string' && payload.jti.length >= 16, 'jti')
  assert.ok(Number.isInteger(payload.iat), 'iat')
  assert.ok(payload.sub_id?.format, 'sub_id')
  assert.equal(Object.keys(payload.events ?? {}).length, 1, 'exactly one event')
  return { payload, protectedHeader }
}

function eventOf(payload) {
  const [type, body] = Object.entries(payload.events)[0]
  return { type, body }
}

// waitPushed resolves with the first pushed SET matching pred.
function waitPushed(pred, ms = 10000) {
  const hit = received.find((s) => pred(s.payload))
  if (hit) return Promise.resolve(hit)
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no matching SET pushed within ${ms} ms (got ${received.length})`)), ms)
    waiters.push({ pred, resolve: (s) => { clearTimeout(timer); resolve(s) } })
  })
}

async function trigger(kind) {
  const r = await fetch(`${controlURL}?kind=${kind}`, { method: 'POST' })
  const text = await r.text()
  assert.equal(r.status, 200, `control ${kind}: ${text}`)
  return JSON.parse(text).subject // the user id the change was about
}

// ---------------------------------------------------------------------------------------------
// The receiver's push endpoint (RFC 8935).

const server = createServer(async (req, res) => {
  const chunks = []
  for await (const c of req) chunks.push(c)
  const reply = (status, body) => {
    res.writeHead(status, body ? { 'content-type': 'application/json' } : {})
    res.end(body ? JSON.stringify(body) : undefined)
  }
  if (req.method !== 'POST' || req.url !== '/events') return reply(404)
  if (req.headers.authorization !== pushSecret) {
    return reply(401, { err: 'authentication_failed', description: 'wrong authorization header' })
  }
  if (!/^application\/secevent\+jwt/.test(req.headers['content-type'] ?? '')) {
    return reply(400, { err: 'invalid_request', description: 'wrong media type' })
  }
  try {
    const v = await verifySET(Buffer.concat(chunks).toString('utf8').trim(), pushStream?.aud ?? clientID)
    received.push(v)
    waiters = waiters.filter((w) => (w.pred(v.payload) ? (w.resolve(v), false) : true))
    reply(202)
  } catch (err) {
    reply(400, { err: 'invalid_request', description: String(err.message ?? err).slice(0, 200) })
  }
})

// ---------------------------------------------------------------------------------------------

await step('transmitter configuration', [], async () => {
  const r = await fetch(new URL('/.well-known/ssf-configuration', issuer))
  assert.equal(r.status, 200)
  config = await json(r)
  assert.equal(config.issuer, issuer)
  assert.equal(config.spec_version, '1_0')
  assert.deepEqual(config.delivery_methods_supported, [PUSH, POLL])
  for (const k of ['jwks_uri', 'configuration_endpoint', 'status_endpoint', 'verification_endpoint']) {
    assert.ok(config[k]?.startsWith(issuer), k)
  }
  assert.ok(config.authorization_schemes.some((s) => s.spec_urn === 'urn:ietf:rfc:6749'))
  jwks = jose.createRemoteJWKSet(new URL(config.jwks_uri))
})

await step('client credentials token', ['transmitter configuration'], async () => {
  const r = await fetch(new URL('/token', issuer), {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: 'Basic ' + Buffer.from(`${encodeURIComponent(clientID)}:${encodeURIComponent(clientSecret)}`).toString('base64'),
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'ssf.manage ssf.poll' }),
  })
  const body = await json(r)
  assert.equal(r.status, 200, JSON.stringify(body))
  token = body.access_token
  assert.ok(token)
})

await step('management refuses a missing token', ['client credentials token'], async () => {
  const r = await api('GET', config.configuration_endpoint, undefined, '')
  assert.equal(r.status, 401)
  assert.match(r.headers.get('www-authenticate') ?? '', /Bearer/)
})

await step('push stream created', ['client credentials token'], async () => {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${server.address().port}/events`
  const r = await api('POST', config.configuration_endpoint, {
    delivery: { method: PUSH, endpoint_url: url, authorization_header: pushSecret },
    events_requested: [CAEP + 'credential-change', CAEP + 'session-revoked'],
    description: 'Node.js receiver (jose)',
  })
  pushStream = await json(r)
  assert.equal(r.status, 201, JSON.stringify(pushStream))
  assert.equal(pushStream.iss, issuer)
  assert.ok(pushStream.aud)
  assert.equal(pushStream.delivery.method, PUSH)
  assert.equal(pushStream.delivery.endpoint_url, url)
  assert.equal(pushStream.delivery.authorization_header, undefined, 'the header is never returned')
  assert.deepEqual(pushStream.events_delivered, [CAEP + 'credential-change', CAEP + 'session-revoked'])
})

await step('push verification', ['push stream created'], async () => {
  const state = randomBytes(12).toString('base64url')
  const r = await api('POST', config.verification_endpoint, { stream_id: pushStream.stream_id, state })
  assert.equal(r.status, 204)
  const { payload } = await waitPushed((p) => p.events[SSF + 'verification']?.state === state)
  assert.deepEqual(payload.sub_id, { format: 'opaque', id: pushStream.stream_id })
})

await step('push: credential-change after a password change', ['push verification'], async () => {
  const user = await trigger('credential-change')
  const { payload } = await waitPushed((p) => p.events[CAEP + 'credential-change'] !== undefined)
  const { body } = eventOf(payload)
  assert.deepEqual(payload.sub_id, { format: 'iss_sub', iss: issuer, sub: user })
  assert.equal(body.credential_type, 'password')
  assert.equal(body.change_type, 'update')
  assert.ok(body.reason_admin?.en, 'reason_admin')
  assert.ok(Number.isInteger(body.event_timestamp))
  assert.ok(typeof payload.txn === 'string' && payload.txn.length > 0, 'txn')
})

await step('stream status', ['push stream created'], async () => {
  const r = await api('GET', `${config.status_endpoint}?stream_id=${pushStream.stream_id}`)
  assert.equal(r.status, 200)
  assert.deepEqual(await json(r), { stream_id: pushStream.stream_id, status: 'enabled' })
})

await step('poll stream created', ['client credentials token'], async () => {
  const r = await api('POST', config.configuration_endpoint, {
    delivery: { method: POLL },
    events_requested: [CAEP + 'session-revoked'],
  })
  pollStream = await json(r)
  assert.equal(r.status, 201, JSON.stringify(pollStream))
  assert.equal(pollStream.delivery.method, POLL)
  assert.ok(pollStream.delivery.endpoint_url.startsWith(issuer))
})

// pollOnce is one RFC 8936 request; it verifies every SET and returns them.
async function pollOnce(body) {
  const r = await api('POST', pollStream.delivery.endpoint_url, body)
  const resp = await json(r)
  assert.equal(r.status, 200, JSON.stringify(resp))
  assert.equal(typeof resp.sets, 'object')
  const sets = []
  for (const [jti, set] of Object.entries(resp.sets)) {
    const v = await verifySET(set, pollStream.aud)
    assert.equal(v.payload.jti, jti, 'key of sets is the jti')
    sets.push(v)
  }
  return { sets, more: resp.moreAvailable }
}

await step('poll verification', ['poll stream created'], async () => {
  const state = randomBytes(12).toString('base64url')
  const r = await api('POST', config.verification_endpoint, { stream_id: pollStream.stream_id, state })
  assert.equal(r.status, 204)
  const { sets } = await pollOnce({ maxEvents: 10, returnImmediately: true })
  const v = sets.find((s) => s.payload.events[SSF + 'verification']?.state === state)
  assert.ok(v, 'verification SET with our state')
  await pollOnce({ maxEvents: 0, returnImmediately: true, ack: sets.map((s) => s.payload.jti) })
})

await step('poll: session-revoked by long polling', ['poll verification'], async () => {
  // Start a long poll, then make the change: the poll answers with the SET.
  const pending = pollOnce({ maxEvents: 10, returnImmediately: false })
  await new Promise((r) => setTimeout(r, 200))
  const user = await trigger('session-revoked')
  const { sets } = await pending
  assert.equal(sets.length, 1, `SETs: ${sets.map((s) => Object.keys(s.payload.events)[0])}`)
  const { payload } = sets[0]
  const { type, body } = eventOf(payload)
  assert.equal(type, CAEP + 'session-revoked')
  assert.equal(payload.sub_id.format, 'complex')
  assert.deepEqual(payload.sub_id.user, { format: 'iss_sub', iss: issuer, sub: user })
  assert.equal(payload.sub_id.session.format, 'opaque')
  assert.ok(body.reason_admin?.en, 'reason_admin (CAEP interoperability profile)')
  // Acknowledge; nothing is left.
  const after = await pollOnce({ maxEvents: 10, returnImmediately: true, ack: [payload.jti] })
  assert.equal(after.sets.length, 0)
})

await step('push stream received the session-revoked too', ['poll: session-revoked by long polling', 'push verification'], async () => {
  const { payload } = await waitPushed((p) => p.events[CAEP + 'session-revoked'] !== undefined)
  assert.equal(payload.sub_id.format, 'complex')
})

await step('a tampered SET is refused by jose', ['push verification'], async () => {
  const good = received[0]
  const set = await new jose.CompactSign(new TextEncoder().encode(JSON.stringify(good.payload)))
    .setProtectedHeader({ alg: 'ES256', typ: 'secevent+jwt', kid: good.protectedHeader.kid })
    .sign((await jose.generateKeyPair('ES256')).privateKey)
  await assert.rejects(verifySET(set, pushStream.aud))
})

await step('streams deleted', ['push stream created', 'poll stream created'], async () => {
  for (const s of [pushStream, pollStream]) {
    const r = await api('DELETE', `${config.configuration_endpoint}?stream_id=${s.stream_id}`)
    assert.equal(r.status, 204)
  }
  const r = await api('GET', config.configuration_endpoint)
  assert.deepEqual(await json(r), [])
})

server.close()
console.log(`${passed} passed, ${failed} failed`)
process.exit(failed > 0 ? 1 : 0)
