// keygate "API keys" page: a client of the admin API on the same origin.
//
// Rules this file keeps:
// - The admin token lives in sessionStorage only and is sent only in the Authorization
//   header of same-origin fetch calls; never in a URL, a log or the DOM.
// - Data from the server reaches the page through textContent and DOM properties only
//   (never as markup), so a key name cannot inject anything.
// - A new secret exists in one place, the secret panel; dismissing the panel removes
//   it from the DOM and drops every reference to it.
'use strict';

(() => {
  const TOKEN_KEY = 'keygate.admin-token';
  const ORG_KEY = 'keygate.org';
  const PAGE_SIZE = 50;
  // Scopes offered before any key shows others; the server's 422 names the known ones.
  const DEFAULT_SCOPES = ['read', 'write'];

  const $ = (id) => {
    const el = document.getElementById(id);
    if (!el) throw new Error('page element #' + id + ' is missing');
    return el;
  };

  /** A DOM element: attrs are set as attributes (`text` as textContent), children as text or nodes. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'text') el.textContent = String(value);
      else if (name === 'className') el.className = value;
      else if (name === 'onclick') el.addEventListener('click', value);
      else el.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === 'text') el.textContent = String(value);
      else el.setAttribute(name, String(value));
    }
    for (const child of children.flat()) if (child) el.append(child);
    return el;
  }

  // ---------------------------------------------------------------- state

  const state = {
    orgs: [],
    org: null,
    keys: [],
    nextCursor: null,
    status: '',
    scopes: new Set(DEFAULT_SCOPES),
    usageKey: null,
    // Bumped on every list reload, so a slow older answer cannot overwrite a newer one.
    listGeneration: 0,
  };

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field || null;
    }
    describe() {
      const where = this.field ? ' (field: ' + this.field + ')' : '';
      const status = this.status ? this.status + ' ' : '';
      return status + this.code + ': ' + this.message + where;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const t = token();
    if (t) headers.Authorization = 'Bearer ' + t;
    const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
    if (body !== undefined) {
      headers['Content-Type'] = method === 'PATCH' ? 'application/merge-patch+json' : 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await window.fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network_error', 'the admin API could not be reached (' + e.message + ')');
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!res.ok) {
      const err = (data && data.error) || {};
      const e = new ApiError(res.status, err.code || 'http_' + res.status, err.message || res.statusText || 'request failed', err.field);
      if (res.status === 401 && token()) signOut('The admin token was refused: ' + e.message, 'error');
      throw e;
    }
    return data;
  }

  const orgPath = () => '/v1/orgs/' + encodeURIComponent(state.org.id);
  const keyPath = (id) => orgPath() + '/keys/' + encodeURIComponent(id);

  // ---------------------------------------------------------------- messages

  function showBanner(message, kind) {
    $('banner-text').textContent = message;
    $('banner').className = 'banner ' + (kind || 'error');
    $('banner').hidden = false;
  }
  function hideBanner() {
    $('banner').hidden = true;
    $('banner-text').textContent = '';
  }
  function showError(e) {
    showBanner(e instanceof ApiError ? e.describe() : String(e && e.message ? e.message : e), 'error');
  }

  /** Shows a server error inside a dialog and marks the input of the field it names. */
  function formError(box, e, fieldInputs) {
    box.textContent = '';
    if (e instanceof ApiError) {
      box.append(h('strong', { text: e.message }));
      if (e.field) box.append(h('div', { className: 'field-name', text: 'Field: ' + e.field }));
      box.append(h('div', { className: 'code', text: (e.status ? e.status + ' ' : '') + e.code }));
      const base = e.field ? e.field.replace(/\[\d+\]$/, '') : null;
      const input = base && fieldInputs ? fieldInputs[base] : null;
      if (input) {
        input.classList.add('invalid');
        input.setAttribute('aria-invalid', 'true');
        input.focus();
      }
    } else {
      box.append(h('strong', { text: String(e && e.message ? e.message : e) }));
    }
    box.hidden = false;
    box.scrollIntoView({ block: 'nearest' });
  }
  function clearFormError(box, fieldInputs) {
    box.hidden = true;
    box.textContent = '';
    for (const input of Object.values(fieldInputs || {})) {
      input.classList.remove('invalid');
      input.removeAttribute('aria-invalid');
    }
  }

  // ---------------------------------------------------------------- formatting

  const pad = (n) => String(n).padStart(2, '0');
  function formatTime(iso) {
    if (!iso) return null;
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + pad(d.getHours()) + ':' + pad(d.getMinutes());
  }
  function relative(iso) {
    const d = new Date(iso);
    const secs = Math.round((Date.now() - d.getTime()) / 1000);
    if (Number.isNaN(secs)) return String(iso);
    if (secs < 0) return formatTime(iso);
    if (secs < 60) return 'just now';
    if (secs < 3600) return Math.floor(secs / 60) + ' min ago';
    if (secs < 86400) return Math.floor(secs / 3600) + ' h ago';
    if (secs < 86400 * 2) return 'yesterday';
    if (secs < 86400 * 30) return Math.floor(secs / 86400) + ' days ago';
    return formatTime(iso);
  }
  function formatDate(iso) {
    const full = formatTime(iso);
    return full ? full.slice(0, 10) : full;
  }
  function timeCell(iso, empty, rel) {
    if (!iso) return h('td', { className: 'muted', text: empty });
    return h('td', {}, h('time', { datetime: iso, title: formatTime(iso) + ' (' + iso + ')', text: rel ? relative(iso) : formatDate(iso) }));
  }

  // ---------------------------------------------------------------- sign in / out

  async function signIn(t) {
    sessionStorage.setItem(TOKEN_KEY, t);
    try {
      await loadOrgs();
    } catch (e) {
      // A 401 has already signed out, with the server's reason in the banner.
      if (!(e instanceof ApiError && e.status === 401)) {
        sessionStorage.removeItem(TOKEN_KEY);
        showError(e);
      }
      return;
    }
    hideBanner();
  }

  function signOut(message, kind) {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(ORG_KEY);
    dismissSecret();
    for (const d of document.querySelectorAll('dialog[open]')) d.close();
    state.orgs = [];
    state.org = null;
    state.keys = [];
    state.nextCursor = null;
    state.usageKey = null;
    state.listGeneration += 1;
    $('keys-body').textContent = '';
    $('org-select').textContent = '';
    $('session').hidden = true;
    $('keys-card').hidden = true;
    $('usage-body').textContent = '';
    $('no-orgs').hidden = true;
    $('sign-in').hidden = false;
    $('token').value = '';
    if (message) showBanner(message, kind || 'info');
    else hideBanner();
    $('token').focus();
  }

  async function loadOrgs() {
    const answer = await api('GET', '/v1/orgs');
    state.orgs = (answer && answer.data) || [];
    $('sign-in').hidden = true;
    $('token').value = '';
    $('session').hidden = false;
    const select = $('org-select');
    select.textContent = '';
    for (const org of state.orgs) {
      select.append(h('option', { value: org.id, text: org.name && org.name !== org.id ? org.name + ' (' + org.id + ')' : org.id }));
    }
    select.disabled = state.orgs.length === 0;
    if (state.orgs.length === 0) {
      $('keys-card').hidden = true;
      $('no-orgs').hidden = false;
      return;
    }
    $('no-orgs').hidden = true;
    const remembered = sessionStorage.getItem(ORG_KEY);
    const org = state.orgs.find((o) => o.id === remembered) || state.orgs[0];
    select.value = org.id;
    await selectOrg(org.id);
  }

  async function selectOrg(id) {
    state.org = state.orgs.find((o) => o.id === id) || null;
    if (!state.org) return;
    sessionStorage.setItem(ORG_KEY, state.org.id);
    // A secret panel stays across an org switch: it names its key and org, and the
    // secret would otherwise be lost to a stray click.
    closeUsage();
    const title = [state.org.name || state.org.id];
    if (state.org.max_key_lifetime_days) title.push('keys live at most ' + state.org.max_key_lifetime_days + ' days');
    if (state.org.key_policy === 'creator') title.push('keys stop when their creator is disabled');
    $('org-title').textContent = title.join(' · ');
    $('keys-card').hidden = false;
    await loadKeys(false);
  }

  // ---------------------------------------------------------------- key list

  async function loadKeys(more) {
    if (!state.org) return;
    const generation = more ? state.listGeneration : ++state.listGeneration;
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (state.status) params.set('status', state.status);
    if (more && state.nextCursor) params.set('cursor', state.nextCursor);
    const button = $('load-more');
    button.disabled = true;
    try {
      const answer = await api('GET', orgPath() + '/keys?' + params.toString());
      if (generation !== state.listGeneration) return;
      const page = (answer && answer.data) || [];
      state.keys = more ? state.keys.concat(page) : page;
      state.nextCursor = (answer && answer.next_cursor) || null;
      for (const k of page) for (const sc of k.scopes || []) state.scopes.add(sc);
      renderKeys();
    } catch (e) {
      if (generation === state.listGeneration) showError(e);
    } finally {
      button.disabled = false;
    }
  }

  function renderKeys() {
    const body = $('keys-body');
    body.textContent = '';
    for (const key of state.keys) body.append(keyRow(key));
    $('keys-empty').hidden = state.keys.length > 0;
    $('keys-empty').textContent = state.status ? 'No ' + state.status + ' keys.' : 'No API keys here yet. Create one to get started.';
    $('keys-table').hidden = state.keys.length === 0;
    $('load-more').hidden = !state.nextCursor;
  }

  function keyRow(key) {
    const final = key.status === 'revoked' || key.status === 'expired';
    const nameCell = h('td', { className: 'name-cell' },
      h('div', { className: 'key-name' }, h('span', { text: key.name }), key.environment === 'test' ? h('span', { className: 'env test', text: 'test' }) : null),
      key.description ? h('div', { className: 'muted small', text: key.description }) : null);
    const restrictions = [];
    if (key.resources) restrictions.push(key.resources.join(', '));
    if (key.ip_allow) restrictions.push('IP ' + key.ip_allow.join(', '));
    if (key.endpoints) restrictions.push('routes ' + key.endpoints.join(', '));
    const access = h('td', {},
      h('div', { className: 'chips' }, (key.scopes || []).map((sc) => h('span', { className: 'chip', text: sc }))),
      restrictions.length ? h('div', { className: 'muted small restr', title: restrictions.join(' · '), text: restrictions.join(' · ') }) : null);
    const expires = key.expires_at
      ? h('td', {}, h('time', { datetime: key.expires_at, title: formatTime(key.expires_at) + ' (' + key.expires_at + ')', className: expiresSoon(key) ? 'soon' : '', text: formatDate(key.expires_at) }))
      : h('td', { className: 'muted', text: 'Never' });
    const status = h('td', {}, h('span', { className: 'status ' + key.status, text: key.status }),
      key.grace_ends_at && !final ? h('div', { className: 'muted small', title: key.grace_ends_at, text: 'old secret until ' + formatTime(key.grace_ends_at) }) : null);
    const button = (action, label, cls, disabled, handler) =>
      h('button', { type: 'button', className: 'small ' + (cls || 'secondary'), 'data-action': action, disabled: disabled, onclick: handler, text: label });
    const actions = h('td', { className: 'actions-col' }, h('div', { className: 'row-actions' },
      button('edit', 'Edit', 'secondary', final, () => openKeyDialog(key)),
      button('regenerate', 'Regenerate', 'secondary', final, () => openRegenerate(key)),
      button('usage', 'Usage', 'secondary', false, () => openUsage(key)),
      button('revoke', 'Revoke', 'danger-outline', key.status === 'revoked', () => confirmRevoke(key)),
      button('delete', 'Delete', 'danger-outline', false, () => confirmDelete(key))));
    return h('tr', { 'data-key-id': key.id, 'data-status': key.status },
      nameCell,
      access,
      h('td', {}, h('code', { className: 'prefix', title: 'The first characters of the key; the rest is never shown again', text: key.prefix + '…' })),
      timeCell(key.created_at, '—', false),
      timeCell(key.last_used_at, 'Never', true),
      expires,
      status,
      actions);
  }

  function expiresSoon(key) {
    const t = new Date(key.expires_at).getTime();
    return key.status === 'active' && t - Date.now() < 7 * 86400 * 1000;
  }

  // ---------------------------------------------------------------- secret panel

  // The live panel's teardown, or null: the only place a secret is referenced from.
  let secretTeardown = null;

  function showSecret(title, key, secret) {
    dismissSecret();
    const value = h('input', { id: 'secret-value', className: 'mono', readonly: true, spellcheck: 'false', autocomplete: 'off', 'aria-label': 'Secret' });
    value.value = secret;
    const status = h('span', { id: 'copy-status', className: 'copy-status', 'aria-live': 'polite' });
    const copy = h('button', { id: 'copy-secret', type: 'button', text: 'Copy' });
    const done = h('button', { id: 'dismiss-secret', type: 'button', className: 'secondary', text: 'I have stored it — hide the secret' });
    const panel = h('section', { id: 'secret-panel', className: 'secret-panel', role: 'region', 'aria-label': 'New secret' },
      h('h2', { text: title }),
      h('p', { className: 'warning' }, h('strong', { text: 'Copy this secret now. It will not be shown again.' }),
        ' keygate stores only a hash of it; if it is lost, regenerate the key.'),
      h('div', { className: 'secret-row' }, value, copy),
      h('div', { className: 'secret-foot' },
        h('span', { className: 'muted small', text: key.name + ' · ' + key.id + ' · ' + key.environment + ' · org ' + key.org }),
        status, done));
    copy.addEventListener('click', async () => {
      value.focus();
      value.select();
      try {
        if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard');
        await navigator.clipboard.writeText(value.value);
        status.textContent = 'Copied to the clipboard.';
      } catch (_) {
        // Without clipboard access (plain HTTP on another host, permission refused) the
        // text stays selected for Ctrl+C / ⌘C.
        let copied = false;
        try {
          copied = document.execCommand('copy');
        } catch (_) {
          copied = false;
        }
        status.textContent = copied ? 'Copied to the clipboard.' : 'Selected: press Ctrl+C (⌘C) to copy.';
      }
    });
    value.addEventListener('focus', () => value.select());
    done.addEventListener('click', () => {
      dismissSecret();
      showBanner('The secret is hidden for good. Regenerate the key if it was not stored.', 'info');
    });
    $('secret-slot').append(panel);
    secretTeardown = () => {
      value.value = '';
      panel.remove();
    };
    panel.scrollIntoView({ block: 'nearest' });
    copy.focus();
  }

  function dismissSecret() {
    if (secretTeardown) {
      const teardown = secretTeardown;
      secretTeardown = null;
      teardown();
    }
  }

  // ---------------------------------------------------------------- create / edit

  let editing = null; // the key being edited, or null when creating

  function keyFormInputs() {
    return {
      name: $('f-name'),
      description: $('f-description'),
      scopes: $('scope-options'),
      environment: $('f-environment'),
      expires_at: $('f-expiry'),
      expires_in_days: $('f-expiry'),
      resources: $('f-resources'),
      ip_allow: $('f-ip'),
    };
  }

  function renderScopeOptions(checked) {
    const box = $('scope-options');
    box.textContent = '';
    const names = Array.from(new Set([...state.scopes, ...checked])).sort((a, b) => {
      const ia = DEFAULT_SCOPES.indexOf(a);
      const ib = DEFAULT_SCOPES.indexOf(b);
      if (ia !== -1 || ib !== -1) return (ia === -1 ? 99 : ia) - (ib === -1 ? 99 : ib);
      return a.localeCompare(b);
    });
    for (const name of names) {
      const input = h('input', { type: 'checkbox', name: 'scope', value: name });
      input.checked = checked.includes(name);
      box.append(h('label', { className: 'check' }, input, ' ' + name));
    }
  }

  function setRestriction(toggleId, areaId, list) {
    const on = Array.isArray(list);
    $(toggleId).checked = on;
    $(areaId).disabled = !on;
    $(areaId).value = on ? list.join('\n') : '';
  }

  function openKeyDialog(key) {
    editing = key || null;
    const form = $('key-form');
    form.reset();
    clearFormError($('key-form-error'), keyFormInputs());
    $('key-dialog-title').textContent = editing ? 'Edit “' + editing.name + '”' : 'Create API key';
    $('key-submit').textContent = editing ? 'Save changes' : 'Create key';
    $('f-name').value = editing ? editing.name : '';
    $('f-description').value = editing && editing.description ? editing.description : '';
    renderScopeOptions(editing ? editing.scopes || [] : ['read']);
    for (const radio of document.querySelectorAll('input[name="environment"]')) {
      radio.checked = radio.value === (editing ? editing.environment : 'live');
      radio.disabled = Boolean(editing);
    }
    $('env-fixed').hidden = !editing;
    $('env-hint').hidden = Boolean(editing);
    const keepOption = $('f-expiry').querySelector('option[value="keep"]');
    keepOption.hidden = !editing;
    keepOption.disabled = !editing;
    $('f-expiry').value = editing ? 'keep' : 'none';
    $('f-expiry-date').hidden = true;
    $('f-expiry-date').value = '';
    $('f-expiry-date').min = new Date(Date.now() + 86400000).toISOString().slice(0, 10);
    $('expiry-current').hidden = !editing;
    $('expiry-current').textContent = editing ? 'Currently: ' + (editing.expires_at ? 'expires ' + formatTime(editing.expires_at) : 'never expires') : '';
    setRestriction('f-resources-on', 'f-resources', editing ? editing.resources : null);
    setRestriction('f-ip-on', 'f-ip', editing ? editing.ip_allow : null);
    $('key-dialog').showModal();
    $('f-name').focus();
  }

  const lines = (text) => text.split(/[\n,]/).map((l) => l.trim()).filter((l) => l.length > 0);
  const sameList = (a, b) => JSON.stringify(a || null) === JSON.stringify(b || null);

  /** The expiry fields of a create body or merge patch, or an error message. */
  function expiryFields(choice, dateValue) {
    switch (choice) {
      case 'keep':
        return {};
      case 'none':
        return editing ? { expires_at: null } : {};
      case 'custom': {
        if (!dateValue) throw new ApiError(0, 'invalid_field', 'choose an expiry date', 'expires_at');
        const [y, m, d] = dateValue.split('-').map(Number);
        // The end of the chosen day, in the admin's own time zone.
        const end = new Date(y, m - 1, d, 23, 59, 59);
        if (Number.isNaN(end.getTime())) throw new ApiError(0, 'invalid_field', 'the expiry date is not a date', 'expires_at');
        return { expires_at: end.toISOString().replace(/\.\d{3}Z$/, 'Z') };
      }
      default:
        return { expires_in_days: Number(choice) };
    }
  }

  function readKeyForm() {
    const scopes = Array.from(document.querySelectorAll('#scope-options input:checked')).map((i) => i.value);
    const resources = $('f-resources-on').checked ? lines($('f-resources').value) : null;
    const ipAllow = $('f-ip-on').checked ? lines($('f-ip').value) : null;
    const description = $('f-description').value.trim();
    const expiry = expiryFields($('f-expiry').value, $('f-expiry-date').value);
    if (!editing) {
      const body = { name: $('f-name').value.trim(), scopes };
      const env = document.querySelector('input[name="environment"]:checked');
      body.environment = env ? env.value : 'live';
      if (description) body.description = description;
      if (resources) body.resources = resources;
      if (ipAllow) body.ip_allow = ipAllow;
      return Object.assign(body, expiry);
    }
    // A JSON Merge Patch of what changed: null lifts a restriction or clears a field.
    const patch = {};
    const name = $('f-name').value.trim();
    if (name !== editing.name) patch.name = name;
    if (description !== (editing.description || '')) patch.description = description || null;
    if (!sameList(scopes, editing.scopes)) patch.scopes = scopes;
    if (!sameList(resources, editing.resources)) patch.resources = resources;
    const currentIps = editing.ip_allow ? editing.ip_allow.map(String) : null;
    if (!sameList(ipAllow, currentIps)) patch.ip_allow = ipAllow;
    return Object.assign(patch, expiry);
  }

  async function submitKeyForm(event) {
    event.preventDefault();
    const inputs = keyFormInputs();
    clearFormError($('key-form-error'), inputs);
    const submit = $('key-submit');
    let body;
    try {
      body = readKeyForm();
    } catch (e) {
      formError($('key-form-error'), e, inputs);
      return;
    }
    submit.disabled = true;
    try {
      if (!editing) {
        const answer = await api('POST', orgPath() + '/keys', body);
        $('key-dialog').close();
        showSecret('New key “' + answer.key.name + '” created', answer.key, answer.secret);
        showBanner('Key “' + answer.key.name + '” created.', 'success');
      } else if (Object.keys(body).length === 0) {
        $('key-dialog').close();
        showBanner('Nothing changed.', 'info');
      } else {
        const key = await api('PATCH', keyPath(editing.id), body);
        $('key-dialog').close();
        showBanner('Key “' + key.name + '” saved.', 'success');
      }
      await loadKeys(false);
    } catch (e) {
      learnScopes(e);
      formError($('key-form-error'), e, inputs);
    } finally {
      submit.disabled = false;
    }
  }

  /** There is no endpoint listing scopes; an unknown-scope 422 names the known ones. */
  function learnScopes(e) {
    if (!(e instanceof ApiError) || !e.field || !e.field.startsWith('scopes')) return;
    const known = /known scopes: ([\w.:, -]+)$/.exec(e.message);
    if (!known) return;
    const names = known[1].split(',').map((n) => n.trim()).filter(Boolean);
    const checked = Array.from(document.querySelectorAll('#scope-options input:checked')).map((i) => i.value);
    state.scopes = new Set(names);
    renderScopeOptions(checked.filter((c) => names.includes(c)));
  }

  // ---------------------------------------------------------------- regenerate

  let regenerating = null;

  function openRegenerate(key) {
    regenerating = key;
    clearFormError($('regen-error'));
    $('regen-title').textContent = 'Regenerate the secret of “' + key.name + '”';
    $('regen-text').textContent = 'A new secret is issued for ' + key.prefix + '… (' + key.id + '). It is shown once.';
    $('regen-grace').value = '0';
    $('regen-dialog').showModal();
    $('regen-grace').focus();
  }

  async function submitRegenerate(event) {
    event.preventDefault();
    if (!regenerating) return;
    const grace = Number($('regen-grace').value);
    $('regen-submit').disabled = true;
    try {
      const answer = await api('POST', keyPath(regenerating.id) + '/regenerate', { grace_seconds: grace });
      $('regen-dialog').close();
      showSecret('New secret for “' + answer.key.name + '”', answer.key, answer.secret);
      showBanner(grace ? 'Secret regenerated; the old one works until ' + formatTime(answer.key.grace_ends_at) + '.' : 'Secret regenerated; the old one no longer works.', 'success');
      regenerating = null;
      await loadKeys(false);
    } catch (e) {
      formError($('regen-error'), e);
    } finally {
      $('regen-submit').disabled = false;
    }
  }

  // ---------------------------------------------------------------- revoke / delete

  let confirmAction = null;

  function openConfirm(title, text, okLabel, action) {
    confirmAction = action;
    clearFormError($('confirm-error'));
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = okLabel;
    $('confirm-dialog').showModal();
    $('confirm-cancel').focus();
  }

  function confirmRevoke(key) {
    openConfirm('Revoke “' + key.name + '”?',
      'Requests with this key (' + key.prefix + '…) are refused at once, and for good. The key stays listed as revoked for audit. This cannot be undone.',
      'Revoke key',
      async () => {
        await api('POST', keyPath(key.id) + '/revoke', {});
        showBanner('Key “' + key.name + '” revoked.', 'success');
      });
  }

  function confirmDelete(key) {
    openConfirm('Delete “' + key.name + '”?',
      'The key (' + key.prefix + '…) stops working at once and leaves this list. Its usage and audit records stay readable. This cannot be undone.',
      'Delete key',
      async () => {
        await api('DELETE', keyPath(key.id));
        if (state.usageKey && state.usageKey.id === key.id) closeUsage();
        showBanner('Key “' + key.name + '” deleted.', 'success');
      });
  }

  async function submitConfirm(event) {
    event.preventDefault();
    if (!confirmAction) return;
    $('confirm-ok').disabled = true;
    try {
      await confirmAction();
      confirmAction = null;
      $('confirm-dialog').close();
      await loadKeys(false);
    } catch (e) {
      formError($('confirm-error'), e);
    } finally {
      $('confirm-ok').disabled = false;
    }
  }

  // ---------------------------------------------------------------- usage

  const RANGES = {
    '24h': { hours: 24, granularity: 'hour' },
    '7d': { hours: 24 * 7, granularity: 'day' },
    '30d': { hours: 24 * 30, granularity: 'day' },
    '90d': { hours: 24 * 90, granularity: 'day' },
  };

  function openUsage(key) {
    state.usageKey = key;
    $('usage-title').textContent = 'Usage · ' + key.name;
    $('usage-subtitle').textContent = key.prefix + '… · ' + key.id;
    $('usage-dialog').showModal();
    loadUsage();
  }

  function closeUsage() {
    if ($('usage-dialog').open) $('usage-dialog').close();
  }

  async function loadUsage() {
    const key = state.usageKey;
    if (!key) return;
    const range = RANGES[$('usage-range').value] || RANGES['24h'];
    const to = new Date();
    const from = new Date(to.getTime() - range.hours * 3600 * 1000);
    const iso = (d) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');
    const params = new URLSearchParams({ from: iso(from), to: iso(to), granularity: range.granularity, format: 'json' });
    const body = $('usage-body');
    body.textContent = '';
    body.append(h('p', { className: 'muted', text: 'Loading usage…' }));
    try {
      const report = await api('GET', keyPath(key.id) + '/usage?' + params.toString());
      if (state.usageKey !== key) return;
      body.textContent = '';
      renderUsage(body, report || {}, range.granularity);
    } catch (e) {
      if (state.usageKey !== key) return;
      body.textContent = '';
      if (e instanceof ApiError && (e.status === 404 || e.status === 405 || e.status === 501)) {
        body.append(h('div', { id: 'usage-unavailable', className: 'notice' },
          h('strong', { text: 'Usage is not available.' }),
          ' This server does not report usage for this key (' + e.describe() + ').'));
      } else {
        body.append(h('div', { className: 'form-error', role: 'alert', text: e instanceof ApiError ? e.describe() : String(e) }));
      }
    }
  }

  const TIME_FIELDS = ['start', 'bucket', 'hour', 'day', 'time', 'timestamp', 'from', 'period'];
  const COUNT_FIELDS = ['requests', 'count', 'total'];

  /** One point of `series`: an object with a time and a count, or a `[time, count]` pair. */
  function seriesPoint(item) {
    if (Array.isArray(item)) return { time: item[0], requests: Number(item[1]) || 0, ok: null };
    if (!item || typeof item !== 'object') return null;
    const timeField = TIME_FIELDS.find((f) => typeof item[f] === 'string' || typeof item[f] === 'number');
    const countField = COUNT_FIELDS.find((f) => typeof item[f] === 'number');
    if (!countField) return null;
    const ok = typeof item.successes === 'number' ? item.successes : null;
    return { time: timeField ? item[timeField] : '', requests: item[countField], ok };
  }

  function pointLabel(time, granularity) {
    const d = new Date(time);
    if (time === '' || Number.isNaN(d.getTime())) return String(time);
    return granularity === 'hour' ? pad(d.getHours()) + ':00' : pad(d.getMonth() + 1) + '-' + pad(d.getDate());
  }

  function renderUsage(body, report, granularity) {
    const points = (Array.isArray(report.series) ? report.series : []).map(seriesPoint).filter(Boolean);
    const total = points.reduce((n, p) => n + p.requests, 0);
    if (points.length === 0 || total === 0) {
      body.append(h('p', { id: 'usage-empty', className: 'empty', text: 'No requests with this key in this range.' }));
    } else {
      body.append(usageChart(points, granularity));
    }
    if (report.totals && typeof report.totals === 'object') body.append(usageTotals(report.totals));
    for (const [name, value] of Object.entries(report)) {
      if (name === 'series' || !Array.isArray(value) || value.length === 0) continue;
      body.append(smallTable(name.replace(/_/g, ' '), value));
    }
  }

  function usageChart(points, granularity) {
    const width = 760;
    const height = 220;
    const left = 48;
    const right = 12;
    const top = 12;
    const bottom = 28;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    const max = Math.max(1, ...points.map((p) => p.requests));
    const niceMax = niceCeil(max);
    const slot = plotW / points.length;
    const barW = Math.max(1, Math.min(40, slot * 0.7));
    const withSplit = points.some((p) => p.ok !== null);
    const svg = s('svg', { id: 'usage-chart', class: 'chart', viewBox: '0 0 ' + width + ' ' + height, role: 'img', 'aria-label': 'Requests per ' + granularity });
    svg.append(s('title', { text: 'Requests per ' + granularity }));
    for (const frac of [0, 0.5, 1]) {
      const y = top + plotH - frac * plotH;
      svg.append(s('line', { x1: left, x2: width - right, y1: y, y2: y, class: 'grid' }));
      svg.append(s('text', { x: left - 6, y: y + 4, 'text-anchor': 'end', class: 'axis', text: formatCount(niceMax * frac) }));
    }
    const labelEvery = Math.max(1, Math.ceil(points.length / 12));
    points.forEach((p, i) => {
      const x = left + i * slot + (slot - barW) / 2;
      const hAll = (p.requests / niceMax) * plotH;
      const label = formatTime(p.time) || String(p.time);
      const g = s('g', { class: 'bar' });
      g.append(s('title', { text: label + ' — ' + p.requests + ' requests' + (p.ok !== null ? ', ' + p.ok + ' successful' : '') }));
      if (withSplit && p.ok !== null) {
        const hOk = (Math.min(p.ok, p.requests) / niceMax) * plotH;
        g.append(s('rect', { x, y: top + plotH - hAll, width: barW, height: Math.max(0, hAll - hOk), class: 'bar-fail' }));
        g.append(s('rect', { x, y: top + plotH - hOk, width: barW, height: hOk, class: 'bar-ok' }));
      } else {
        g.append(s('rect', { x, y: top + plotH - hAll, width: barW, height: hAll, class: 'bar-ok' }));
      }
      svg.append(g);
      if (i % labelEvery === 0) {
        svg.append(s('text', { x: x + barW / 2, y: height - 8, 'text-anchor': 'middle', class: 'axis', text: pointLabel(p.time, granularity) }));
      }
    });
    svg.append(s('line', { x1: left, x2: width - right, y1: top + plotH, y2: top + plotH, class: 'baseline' }));
    const figure = h('figure', { className: 'chart-wrap' }, svg);
    if (withSplit) {
      figure.append(h('figcaption', { className: 'legend' },
        h('span', { className: 'swatch ok' }), ' successful (2xx/3xx) ',
        h('span', { className: 'swatch fail' }), ' other'));
    }
    return figure;
  }

  function niceCeil(n) {
    const p = Math.pow(10, Math.floor(Math.log10(n)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= n) return m * p;
    return 10 * p;
  }
  function formatCount(n) {
    if (n >= 1e6) return (n / 1e6).toFixed(n % 1e6 ? 1 : 0) + 'M';
    if (n >= 1e3) return (n / 1e3).toFixed(n % 1e3 ? 1 : 0) + 'k';
    return String(Math.round(n));
  }

  function usageTotals(totals) {
    const list = h('dl', { id: 'usage-totals', className: 'totals' });
    const add = (name, value) => list.append(h('div', {}, h('dt', { text: name.replace(/_/g, ' ') }), h('dd', { text: value })));
    const first = ['requests', 'successes', 'client_errors', 'denials', 'rate_limited', 'upstream_errors'];
    const rank = (name) => (first.includes(name) ? first.indexOf(name) : first.length);
    const entries = Object.entries(totals).sort((a, b) => rank(a[0]) - rank(b[0]));
    for (const [name, value] of entries) {
      if (value && typeof value === 'object' && !Array.isArray(value)) {
        for (const [inner, v] of Object.entries(value)) add(name + ': ' + inner, String(v));
      } else {
        add(name, value === null ? '—' : String(value));
      }
    }
    return list;
  }

  function smallTable(title, items) {
    const columns = [];
    for (const item of items) {
      if (item && typeof item === 'object') for (const k of Object.keys(item)) if (!columns.includes(k)) columns.push(k);
    }
    // Names (route, resource) before their counts, whatever order the server used.
    const isCount = (c) => items.every((item) => !item || typeof item[c] !== 'string');
    columns.sort((a, b) => Number(isCount(a)) - Number(isCount(b)));
    const table = h('table', { className: 'small-table' },
      h('caption', { text: title }),
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', text: c.replace(/_/g, ' ') })))),
      h('tbody', {}, items.slice(0, 20).map((item) => h('tr', {}, columns.map((c) => {
        const v = item && typeof item === 'object' ? item[c] : item;
        return h('td', { text: v === undefined || v === null ? '—' : typeof v === 'object' ? JSON.stringify(v) : String(v) });
      })))));
    return table;
  }

  // ---------------------------------------------------------------- wiring

  function wire() {
    $('sign-in-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const t = $('token').value.trim();
      if (!t) {
        showBanner('Paste an admin token to sign in.', 'error');
        return;
      }
      signIn(t);
    });
    $('sign-out').addEventListener('click', () => signOut('Signed out. The token was removed from this tab.'));
    $('banner-close').addEventListener('click', hideBanner);
    $('org-select').addEventListener('change', (e) => selectOrg(e.target.value));
    $('status-filter').addEventListener('change', (e) => {
      state.status = e.target.value;
      loadKeys(false);
    });
    $('refresh').addEventListener('click', () => loadKeys(false));
    $('load-more').addEventListener('click', () => loadKeys(true));
    $('new-key').addEventListener('click', () => openKeyDialog(null));
    $('key-form').addEventListener('submit', submitKeyForm);
    $('key-cancel').addEventListener('click', () => $('key-dialog').close());
    $('f-expiry').addEventListener('change', (e) => {
      $('f-expiry-date').hidden = e.target.value !== 'custom';
      if (e.target.value === 'custom') $('f-expiry-date').focus();
    });
    for (const [toggle, area] of [['f-resources-on', 'f-resources'], ['f-ip-on', 'f-ip']]) {
      $(toggle).addEventListener('change', (e) => {
        $(area).disabled = !e.target.checked;
        if (e.target.checked) $(area).focus();
      });
    }
    $('regen-form').addEventListener('submit', submitRegenerate);
    $('regen-cancel').addEventListener('click', () => $('regen-dialog').close());
    $('confirm-form').addEventListener('submit', submitConfirm);
    $('confirm-cancel').addEventListener('click', () => {
      confirmAction = null;
      $('confirm-dialog').close();
    });
    $('usage-range').addEventListener('change', loadUsage);
    $('usage-close').addEventListener('click', closeUsage);
    // Also closed with Escape: forget the key so a late answer is dropped.
    $('usage-dialog').addEventListener('close', () => {
      state.usageKey = null;
      $('usage-body').textContent = '';
    });
  }

  function start() {
    wire();
    if (token()) {
      $('sign-in').hidden = true;
      loadOrgs().catch((e) => {
        if (!(e instanceof ApiError && e.status === 401)) signOut(e instanceof ApiError ? e.describe() : String(e), 'error');
      });
    } else {
      signOut(null);
    }
  }

  start();
})();
