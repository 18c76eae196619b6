// The API keys page: the list (with restriction and limit standing per key), create
// and edit, regenerate, revoke and delete. Which buttons exist follows the signed-in
// principal's role (state.can); a manager without api_access is told why.

import { ApiError, api } from './api.js';
import { $, actionButton, clearFormError, formError, h, openConfirm, showBanner, showError, showOnce } from './dom.js';
import { formatDate, formatTime, timeCell } from './format.js';
import { fetchStanding, standingSummary } from './limits.js';
import { can, emit, keyPath, on, orgPath, state, whyNot } from './state.js';

const PAGE_SIZE = 50;
// Scopes offered before any key shows others; the server's 422 names the known ones.
const DEFAULT_SCOPES = ['read', 'write'];
// Limit look-ups in flight at once while a list renders.
const STANDING_CONCURRENCY = 3;

const list = {
  keys: [],
  nextCursor: null,
  status: '',
  scopes: new Set(DEFAULT_SCOPES),
  // Bumped on every list reload, so a slow older answer cannot overwrite a newer one.
  generation: 0,
};

export const isFinal = (key) => key.status === 'revoked' || key.status === 'expired';
export const isRestricted = (key) => Boolean(key.resources || key.endpoints || key.ip_allow);

export function resetKeys() {
  list.keys = [];
  list.nextCursor = null;
  list.generation += 1;
  $('keys-body').textContent = '';
}

/** The notice and toolbar of the page for the signed-in role. */
export function applyRole() {
  $('new-key').hidden = !can('write_keys');
  const notice = $('access-notice');
  if (can('write_keys')) {
    notice.hidden = true;
    notice.textContent = '';
    return;
  }
  const role = state.me ? state.me.principal.role : '';
  notice.textContent = '';
  notice.append(h('strong', { text: 'Read-only access. ' }),
    role === 'manager'
      ? 'You cannot create or edit keys: ' + (whyNot('write_keys') || 'no API access') + '. An administrator can grant you API access on the People page.'
      : 'Your role (' + role + ') may view keys and their usage, but not change them.');
  notice.hidden = false;
}

export async function loadKeys(more) {
  if (!state.org) return;
  const generation = more ? list.generation : ++list.generation;
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (list.status) params.set('status', list.status);
  if (more && list.nextCursor) params.set('cursor', list.nextCursor);
  const button = $('load-more');
  button.disabled = true;
  try {
    const answer = await api('GET', orgPath() + '/keys?' + params.toString());
    if (generation !== list.generation) return;
    const page = (answer && answer.data) || [];
    list.keys = more ? list.keys.concat(page) : page;
    list.nextCursor = (answer && answer.next_cursor) || null;
    for (const k of page) for (const sc of k.scopes || []) list.scopes.add(sc);
    renderKeys();
    loadStandings(page.filter((k) => !isFinal(k)), generation);
  } catch (e) {
    if (generation === list.generation) showError(e);
  } finally {
    button.disabled = false;
  }
}

function renderKeys() {
  const body = $('keys-body');
  body.textContent = '';
  for (const key of list.keys) body.append(keyRow(key));
  $('keys-empty').hidden = list.keys.length > 0;
  $('keys-empty').textContent = list.status ? 'No ' + list.status + ' keys.' : can('write_keys') ? 'No API keys here yet. Create one to get started.' : 'No API keys here yet.';
  $('keys-table').hidden = list.keys.length === 0;
  $('load-more').hidden = !list.nextCursor;
}

/** Fills each row's limits cell, a few look-ups at a time. */
async function loadStandings(keys, generation) {
  const queue = keys.slice();
  const worker = async () => {
    while (queue.length && generation === list.generation) {
      const key = queue.shift();
      const cell = document.querySelector('td[data-limits-for="' + CSS.escape(key.id) + '"]');
      if (!cell) continue;
      try {
        const standing = await fetchStanding(key.id);
        if (generation !== list.generation) return;
        cell.textContent = '';
        cell.append(...standingSummary(standing));
      } catch (e) {
        cell.textContent = e instanceof ApiError ? e.code : 'unavailable';
      }
    }
  };
  await Promise.all(Array.from({ length: STANDING_CONCURRENCY }, worker));
}

/** The buttons a role may use on `key`, for a row or the detail view. */
export function keyActions(key) {
  const final = isFinal(key);
  const buttons = [];
  if (can('write_keys')) {
    buttons.push(actionButton('edit', 'Edit', 'secondary', () => openKeyDialog(key), { disabled: final }));
    buttons.push(actionButton('regenerate', 'Regenerate', 'secondary', () => openRegenerate(key), { disabled: final }));
  }
  if (can('revoke_keys')) {
    buttons.push(actionButton('revoke', 'Revoke', 'danger-outline', () => confirmRevoke(key), { disabled: key.status === 'revoked' }));
    buttons.push(actionButton('delete', 'Delete', 'danger-outline', () => confirmDelete(key)));
  }
  return buttons;
}

export function restrictionBadge(key) {
  return isRestricted(key)
    ? h('span', { className: 'badge restricted', text: 'Restricted' })
    : h('span', { className: 'badge unrestricted', text: 'Unrestricted' });
}

function keyRow(key) {
  const nameCell = h('td', { className: 'name-cell' },
    h('div', { className: 'key-name' },
      h('button', { type: 'button', className: 'link-button', 'data-action': 'open', title: 'Details, limits, usage and audit of this key', onclick: () => emit('open-key', key), text: key.name }),
      key.environment === 'test' ? h('span', { className: 'env test', text: 'test' }) : null),
    key.description ? h('div', { className: 'muted small', text: key.description }) : null);
  const restrictions = [];
  if (key.resources) restrictions.push(key.resources.join(', '));
  if (key.ip_allow) restrictions.push('IP ' + key.ip_allow.join(', '));
  if (key.endpoints) restrictions.push('routes ' + key.endpoints.join(', '));
  const access = h('td', {},
    h('div', { className: 'chips' }, (key.scopes || []).map((sc) => h('span', { className: 'chip', text: sc })), restrictionBadge(key)),
    restrictions.length ? h('div', { className: 'muted small restr', title: restrictions.join(' · '), text: restrictions.join(' · ') }) : null);
  const limits = h('td', { className: 'limits-cell', 'data-limits-for': key.id },
    isFinal(key) ? h('span', { className: 'muted', text: '—' }) : h('span', { className: 'muted small', text: '…' }));
  const expires = key.expires_at
    ? h('td', {}, h('time', { datetime: key.expires_at, title: formatTime(key.expires_at) + ' (' + key.expires_at + ')', className: expiresSoon(key) ? 'soon' : '', text: formatDate(key.expires_at) }))
    : h('td', { className: 'muted', text: 'Never' });
  const status = h('td', {}, h('span', { className: 'status ' + key.status, text: key.status }),
    key.grace_ends_at && !isFinal(key) ? h('div', { className: 'muted small', title: key.grace_ends_at, text: 'old secret until ' + formatTime(key.grace_ends_at) }) : null);
  const actions = h('td', { className: 'actions-col' }, h('div', { className: 'row-actions' }, keyActions(key)));
  return h('tr', { 'data-key-id': key.id, 'data-status': key.status },
    nameCell,
    access,
    limits,
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
  const names = Array.from(new Set([...list.scopes, ...checked])).sort((a, b) => {
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

function setRestriction(toggleId, areaId, values) {
  const enabled = Array.isArray(values);
  $(toggleId).checked = enabled;
  $(areaId).disabled = !enabled;
  $(areaId).value = enabled ? values.join('\n') : '';
}

export function openKeyDialog(key) {
  editing = key || null;
  $('key-form').reset();
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

/** The expiry fields of a create body or merge patch; throws a field error. */
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

function showKeySecret(title, key, secret) {
  showOnce(title, secret, 'keygate stores only a hash of it; if it is lost, regenerate the key.',
    key.name + ' · ' + key.id + ' · ' + key.environment + ' · org ' + key.org);
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
      showKeySecret('New key “' + answer.key.name + '” created', answer.key, answer.secret);
      showBanner('Key “' + answer.key.name + '” created.', 'success');
      emit('keys-changed', answer.key);
    } else if (Object.keys(body).length === 0) {
      $('key-dialog').close();
      showBanner('Nothing changed.', 'info');
    } else {
      const key = await api('PATCH', keyPath(editing.id), body);
      $('key-dialog').close();
      showBanner('Key “' + key.name + '” saved.', 'success');
      emit('keys-changed', key);
    }
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
  list.scopes = new Set(names);
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
    showKeySecret('New secret for “' + answer.key.name + '”', answer.key, answer.secret);
    showBanner(grace ? 'Secret regenerated; the old one works until ' + formatTime(answer.key.grace_ends_at) + '.' : 'Secret regenerated; the old one no longer works.', 'success');
    regenerating = null;
    emit('keys-changed', answer.key);
  } catch (e) {
    formError($('regen-error'), e);
  } finally {
    $('regen-submit').disabled = false;
  }
}

// ---------------------------------------------------------------- revoke / delete

function confirmRevoke(key) {
  openConfirm('Revoke “' + key.name + '”?',
    'Requests with this key (' + key.prefix + '…) are refused at once, and for good. The key stays listed as revoked for audit. This cannot be undone.',
    'Revoke key',
    async () => {
      const revoked = await api('POST', keyPath(key.id) + '/revoke', {});
      showBanner('Key “' + key.name + '” revoked.', 'success');
      emit('keys-changed', revoked || key);
    });
}

function confirmDelete(key) {
  openConfirm('Delete “' + key.name + '”?',
    'The key (' + key.prefix + '…) stops working at once and leaves this list. Its usage and audit records stay readable. This cannot be undone.',
    'Delete key',
    async () => {
      await api('DELETE', keyPath(key.id));
      showBanner('Key “' + key.name + '” deleted.', 'success');
      emit('key-deleted', key);
      emit('keys-changed', null);
    });
}

// ---------------------------------------------------------------- wiring

export function wireKeys() {
  $('status-filter').addEventListener('change', (e) => {
    list.status = e.target.value;
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
  on('keys-changed', () => loadKeys(false));
}
