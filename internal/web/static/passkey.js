// Ward's passkey helper: the only script of the sign-in pages. It runs the
// WebAuthn ceremony of each <form data-webauthn="get|create"> whose
// options the server put in data-webauthn-options, writes the browser's
// answer into the form's "response" field and submits the form, to Ward
// itself. It makes no requests of its own (the pages' CSP allows none),
// and without it the password and code forms work as before.
(function () {
  'use strict'
  if (!window.PublicKeyCredential || !navigator.credentials) return

  function dec (s) {
    s = s.replace(/-/g, '+').replace(/_/g, '/')
    while (s.length % 4) s += '='
    const bin = atob(s)
    const out = new Uint8Array(bin.length)
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i)
    return out.buffer
  }
  function enc (buf) {
    if (!buf) return ''
    const b = new Uint8Array(buf)
    let s = ''
    for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i])
    return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
  }
  function ids (list) {
    return (list || []).map(function (c) { return Object.assign({}, c, { id: dec(c.id) }) })
  }
  function createOptions (o) {
    const pk = Object.assign({}, o.publicKey)
    pk.challenge = dec(pk.challenge)
    pk.user = Object.assign({}, pk.user, { id: dec(pk.user.id) })
    pk.excludeCredentials = ids(pk.excludeCredentials)
    return { publicKey: pk }
  }
  function getOptions (o) {
    const pk = Object.assign({}, o.publicKey)
    pk.challenge = dec(pk.challenge)
    pk.allowCredentials = ids(pk.allowCredentials)
    return { publicKey: pk }
  }
  function answer (cred) {
    const r = cred.response
    const out = {
      id: cred.id,
      rawId: enc(cred.rawId),
      type: cred.type,
      authenticatorAttachment: cred.authenticatorAttachment || undefined,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      response: { clientDataJSON: enc(r.clientDataJSON) }
    }
    if (r.attestationObject) {
      out.response.attestationObject = enc(r.attestationObject)
      out.response.transports = r.getTransports ? r.getTransports() : []
    } else {
      out.response.authenticatorData = enc(r.authenticatorData)
      out.response.signature = enc(r.signature)
      if (r.userHandle) out.response.userHandle = enc(r.userHandle)
    }
    return JSON.stringify(out)
  }
  function message (e) {
    if (e && e.name === 'NotAllowedError') return 'No passkey was used (cancelled or timed out). Try again.'
    if (e && e.name === 'InvalidStateError') return 'This authenticator is already registered.'
    return 'The passkey could not be used' + (e && e.message ? ': ' + e.message : '.')
  }

  document.querySelectorAll('[data-webauthn-box]').forEach(function (el) { el.hidden = false })
  document.querySelectorAll('[data-webauthn-nojs]').forEach(function (el) { el.hidden = true })
  document.querySelectorAll('form[data-webauthn]').forEach(function (form) {
    const status = form.querySelector('[data-webauthn-status]')
    let busy = false
    form.addEventListener('submit', function (ev) {
      if (form.dataset.ready === '1') return
      ev.preventDefault()
      if (busy) return
      busy = true
      if (status) status.textContent = 'Waiting for your passkey…'
      let opts
      try {
        opts = JSON.parse(form.dataset.webauthnOptions)
      } catch (e) {
        busy = false
        if (status) status.textContent = 'This page is damaged; reload it.'
        return
      }
      const p = form.dataset.webauthn === 'create'
        ? navigator.credentials.create(createOptions(opts))
        : navigator.credentials.get(getOptions(opts))
      p.then(function (cred) {
        form.querySelector('input[name=response]').value = answer(cred)
        form.dataset.ready = '1'
        if (status) status.textContent = 'Checking…'
        form.submit()
      }, function (e) {
        busy = false
        if (status) status.textContent = message(e)
      })
    })
  })
})()
