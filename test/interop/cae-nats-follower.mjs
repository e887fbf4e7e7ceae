// Interoperability test: an independent follower of Ward's CAE stream on NATS JetStream, written
// with the official NATS client for JavaScript (https://github.com/nats-io/nats.js, npm `nats`)
// and jose (https://github.com/panva/jose). Nothing here comes from Ward: it connects to Ward's
// embedded NATS listener with a subscriber nkey (nkeyAuthenticator), reads the stream with
// JetStream's ordered consumer from a start time (so it replays what was published before it
// started, then follows live), and verifies every message with jose.jwtVerify against the JWKS
// discovered from the issuer (typ secevent+jwt, ES256, iss, aud urn:ward:cae:nats), requiring
// exactly one event per SET and an event that matches the NATS subject.
//
// Environment:
//   WARD_ISSUER          issuer URL of a running Ward (required)
//   WARD_NATS_URL        Ward's NATS listener, nats://host:port (required)
//   WARD_NATS_SEED       the subscriber's nkey seed, SU... (required; never printed)
//   WARD_CAE_STREAM      stream name (default WARD_CAE)
//   WARD_CAE_AUDIENCE    expected aud (default urn:ward:cae:nats)
//   WARD_CAE_REPLAY_SEC  how far back to replay (default 3600)
//   WARD_FOLLOW_TIMEOUT  stop after this many ms (default 60000)
//
// Output, one JSON object per line on stdout:
//   {"kind":"ready","replayed":N}                          the replay has caught up
//   {"kind":"accepted","seq":..,"subject":..,"jti":..,"event":<uri>,"sub_id":{..},"pending":..}
//   {"kind":"refused","seq":..,"subject":..,"error":<code>,"message":..}
// It follows until stdin is closed (the Go test's signal to stop) or the timeout, then prints
// {"kind":"done",...} and "N accepted, N refused" and exits 0 (1 on a connection error).
//
// Run: node cae-nats-follower.mjs   (cae_nats_test.go does this against a wardtest instance)

import { connect, nkeyAuthenticator, DeliverPolicy } from 'nats'
import * as jose from 'jose'

function env(name, def) {
  const v = process.env[name] || def
  if (!v) {
    console.error(`missing environment variable ${name}`)
    process.exit(2)
  }
  return v
}

const issuer = env('WARD_ISSUER')
const natsURL = env('WARD_NATS_URL')
const seed = env('WARD_NATS_SEED')
const streamName = env('WARD_CAE_STREAM', 'WARD_CAE')
const audience = env('WARD_CAE_AUDIENCE', 'urn:ward:cae:nats')
const replaySec = Number(env('WARD_CAE_REPLAY_SEC', '3600'))
const timeoutMs = Number(env('WARD_FOLLOW_TIMEOUT', '60000'))

const EVENT_PREFIX = {
  caep: 'https://schemas.openid.net/secevent/caep/event-type/',
  risc: 'https://schemas.openid.net/secevent/risc/event-type/',
}

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')

// Discovery: the JWKS of the issuer that signs the SETs.
const disco = await (await fetch(new URL('/.well-known/openid-configuration', issuer + '/'))).json()
if (disco.issuer !== issuer || !disco.jwks_uri) {
  console.error(`discovery: issuer ${disco.issuer}, jwks_uri ${disco.jwks_uri}`)
  process.exit(1)
}
const jwks = jose.createRemoteJWKSet(new URL(disco.jwks_uri))

// verify checks one message and returns what the resource server would act on, or throws.
async function verify(subject, data) {
  const set = new TextDecoder().decode(data)
  const { payload, protectedHeader } = await jose.jwtVerify(set, jwks, {
    issuer,
    audience,
    typ: 'secevent+jwt',
    algorithms: ['ES256'],
  })
  if (typeof payload.jti !== 'string' || payload.jti === '') throw new Error('no jti')
  if (typeof payload.iat !== 'number') throw new Error('no iat')
  const events = Object.keys(payload.events ?? {})
  if (events.length !== 1) throw new Error(`${events.length} events in one SET, want 1`)
  if (!payload.sub_id?.format) throw new Error('no sub_id')
  // ward.cae.<caep|risc>.<event-name> names the event inside.
  const m = /\.(caep|risc)\.([a-z0-9-]+)$/.exec(subject)
  if (!m || events[0] !== EVENT_PREFIX[m[1]] + m[2]) {
    throw new Error(`subject ${subject} does not match event ${events[0]}`)
  }
  return { jti: payload.jti, alg: protectedHeader.alg, event: events[0], sub_id: payload.sub_id, claims: payload.events[events[0]] }
}

let accepted = 0
let refused = 0
let nc
try {
  nc = await connect({
    servers: natsURL,
    name: 'ward-interop-node-follower',
    authenticator: nkeyAuthenticator(new TextEncoder().encode(seed)),
    reconnect: false,
  })
} catch (err) {
  console.error(`connect: ${err.code ?? ''} ${err.message}`)
  process.exit(1)
}

const js = nc.jetstream()
const start = new Date(Date.now() - replaySec * 1000)
const consumer = await js.consumers.get(streamName, {
  deliver_policy: DeliverPolicy.StartTime,
  opt_start_time: start.toISOString(),
})
// Stream state when the consumer was made: is there anything to replay? (The client's
// default account check, $JS.API.INFO, is among the subscriber's permissions.)
const jsm = await nc.jetstreamManager()
const state = (await jsm.streams.info(streamName)).state
let ready = false
let replayed = 0
function markReady() {
  if (!ready) {
    ready = true
    out({ kind: 'ready', replayed, stream_messages: state.messages })
  }
}
if (state.messages === 0 || new Date(state.last_ts) < start) markReady()

const messages = await consumer.consume({ max_messages: 64 })

let stopping = false
async function stop(why) {
  if (stopping) return
  stopping = true
  await messages.close().catch(() => {})
  out({ kind: 'done', why, accepted, refused })
  console.log(`${accepted} accepted, ${refused} refused`)
  await nc.close()
}
process.stdin.on('end', () => stop('stdin closed'))
process.stdin.on('error', () => stop('stdin error'))
process.stdin.resume()
const timer = setTimeout(() => stop('timeout'), timeoutMs)
timer.unref()

for await (const m of messages) {
  const base = { seq: m.info.streamSequence, subject: m.subject, pending: m.info.pending, replay: !ready }
  try {
    const v = await verify(m.subject, m.data)
    accepted++
    out({ kind: 'accepted', ...base, ...v })
  } catch (err) {
    refused++
    out({ kind: 'refused', ...base, error: err.code ?? err.name, message: err.message })
  }
  if (!ready) {
    replayed++
    if (m.info.pending === 0) markReady()
  }
}
await stop('consumer ended')
