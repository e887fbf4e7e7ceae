// Drives Ward's sign-in pages in a real browser (Debian's Chromium through
// playwright-core): authorization request, password, TOTP, redirect back to
// the client with code/state/iss, SSO on the next request, a wrong
// password's message, no CSP violations, and HttpOnly cookies. Prints
// "N passed, N failed" at the end.
import { chromium } from 'playwright-core'
import { createHash, createHmac, randomBytes } from 'node:crypto'

const issuer = process.env.WARD_ISSUER
const redirectURI = process.env.WARD_REDIRECT_URI
const clientID = process.env.WARD_CLIENT_ID
const clientSecret = process.env.WARD_CLIENT_SECRET
const username = process.env.WARD_USERNAME
const password = process.env.WARD_PASSWORD
const totpSecret = process.env.WARD_TOTP_SECRET
const screenshotDir = process.env.WARD_SCREENSHOT_DIR
const executablePath = process.env.WARD_CHROMIUM || '/usr/bin/chromium'

let passed = 0
let failed = 0
function check (name, ok, detail = '') {
  if (ok) { passed++; console.log(`PASS ${name}`) } else { failed++; console.log(`FAIL ${name} ${detail}`) }
}

const b64url = (b) => Buffer.from(b).toString('base64url')

// RFC 6238 TOTP (SHA-1, 6 digits, 30 s), so the test types what an
// authenticator app would show.
function totp (secret, at = Date.now()) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'
  let bits = ''
  for (const c of secret.replace(/=+$/, '')) bits += alphabet.indexOf(c).toString(2).padStart(5, '0')
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)))
  const counter = Buffer.alloc(8)
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 1000 / 30)))
  const h = createHmac('sha1', key).update(counter).digest()
  const o = h[h.length - 1] & 0xf
  return String((h.readUInt32BE(o) & 0x7fffffff) % 1000000).padStart(6, '0')
}

function authorizeURL (state, challenge) {
  const u = new URL(issuer + '/authorize')
  u.search = new URLSearchParams({
    response_type: 'code', client_id: clientID, redirect_uri: redirectURI, scope: 'openid profile',
    state, nonce: b64url(randomBytes(12)), code_challenge: challenge, code_challenge_method: 'S256'
  })
  return u.toString()
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync']
})
try {
  const context = await browser.newContext()
  const page = await context.newPage()
  const cspViolations = []
  page.on('console', (m) => { if (/Content Security Policy|Refused to/i.test(m.text())) cspViolations.push(m.text()) })
  const client = new URL(redirectURI)

  const verifier = b64url(randomBytes(32))
  const challenge = b64url(createHash('sha256').update(verifier).digest())
  const state = b64url(randomBytes(9))
  await page.goto(authorizeURL(state, challenge))
  check('login page shown', await page.locator('input[name=password]').count() === 1)
  if (screenshotDir) await page.screenshot({ path: `${screenshotDir}/login.png` })

  // A wrong password: the generic message, and the form again.
  await page.fill('#username', username)
  await page.fill('#password', 'definitely-not-the-password')
  await Promise.all([page.waitForLoadState('load'), page.click('button[type=submit]')])
  check('wrong password rejected with the generic message', (await page.textContent('body')).includes('Incorrect username or password'))

  await page.fill('#username', username)
  await page.fill('#password', password)
  await Promise.all([page.waitForLoadState('load'), page.click('button[type=submit]')])
  check('second-factor page shown', await page.locator('#otp').count() === 1)
  if (screenshotDir) await page.screenshot({ path: `${screenshotDir}/mfa.png` })
  await page.fill('#otp', totp(totpSecret))
  await Promise.all([page.waitForURL(`${client.origin}/**`), page.click('button[type=submit]')])
  const back = new URL(page.url())
  check('redirected to the client', back.origin + back.pathname === redirectURI, page.url())
  check('state returned', back.searchParams.get('state') === state)
  check('iss returned (RFC 9207)', back.searchParams.get('iss') === issuer)
  const code = back.searchParams.get('code')
  check('code returned', !!code)

  // The code works at the token endpoint with the verifier.
  const res = await fetch(issuer + '/token', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: 'Basic ' + Buffer.from(`${clientID}:${clientSecret}`).toString('base64') },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: redirectURI })
  })
  const tok = await res.json()
  check('code exchanged', res.status === 200 && !!tok.access_token && !!tok.id_token, JSON.stringify(tok))

  // SSO: the next authorization request goes straight back to the client.
  const state2 = b64url(randomBytes(9))
  await page.goto(authorizeURL(state2, challenge))
  await page.waitForURL(`${client.origin}/**`)
  check('single sign-on without a login page', new URL(page.url()).searchParams.get('state') === state2)

  const cookies = await context.cookies(issuer)
  check('session and CSRF cookies are HttpOnly and SameSite=Lax',
    cookies.length >= 2 && cookies.every((c) => c.httpOnly && c.sameSite === 'Lax'), JSON.stringify(cookies.map((c) => [c.name, c.httpOnly, c.sameSite])))
  check('no CSP violations', cspViolations.length === 0, cspViolations.join('\n'))
} catch (e) {
  failed++
  console.log(`FAIL unexpected error: ${e.stack || e}`)
} finally {
  await browser.close()
}
console.log(`${passed} passed, ${failed} failed`)
process.exit(failed === 0 ? 0 : 1)
