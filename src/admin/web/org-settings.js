// Org settings (owners): name, key_policy, max_key_lifetime_days and the org's default
// rate limits, saved as a JSON Merge Patch of what changed; and new organisations.

import { ApiError, api } from './api.js';
import { $, clearFormError, formError, showBanner } from './dom.js';
import { formatTime } from './format.js';
import { emit, orgPath, state } from './state.js';

const WINDOWS = ['per_second', 'per_minute', 'per_hour', 'per_day', 'per_month'];

let current = null;

function inputs() {
  const map = { name: $('o-name'), key_policy: $('o-policy'), max_key_lifetime_days: $('o-lifetime'), rate_limit: $('o-limits') };
  for (const w of WINDOWS) map['rate_limit.' + w] = $('o-' + w);
  return map;
}

export async function showOrgSettings() {
  clearFormError($('org-form-error'), inputs());
  try {
    current = await api('GET', orgPath());
  } catch (e) {
    formError($('org-form-error'), e);
    return;
  }
  $('org-settings-subtitle').textContent = current.id + ' · created ' + formatTime(current.created_at) + ' · updated ' + formatTime(current.updated_at);
  $('o-name').value = current.name || '';
  for (const radio of document.querySelectorAll('input[name="key_policy"]')) radio.checked = radio.value === (current.key_policy || 'org');
  $('o-lifetime').value = current.max_key_lifetime_days ? String(current.max_key_lifetime_days) : '';
  const limits = current.rate_limit || {};
  for (const w of WINDOWS) $('o-' + w).value = limits[w] ? String(limits[w]) : '';
}

/** A whole number of at least 1, or null for an empty box; throws a field error. */
function count(field, input) {
  const text = input.value.trim();
  if (text === '') return null;
  if (!/^\d+$/.test(text) || Number(text) < 1) throw new ApiError(0, 'invalid_field', 'must be a whole number of at least 1, or empty', field);
  return Number(text);
}

function readPatch() {
  const patch = {};
  const name = $('o-name').value.trim();
  if (name !== current.name) patch.name = name;
  const policy = document.querySelector('input[name="key_policy"]:checked');
  if (policy && policy.value !== (current.key_policy || 'org')) patch.key_policy = policy.value;
  const lifetime = count('max_key_lifetime_days', $('o-lifetime'));
  if (lifetime !== (current.max_key_lifetime_days || null)) patch.max_key_lifetime_days = lifetime;
  const before = current.rate_limit || {};
  const limits = {};
  let changed = false;
  let any = false;
  for (const w of WINDOWS) {
    const value = count('rate_limit.' + w, $('o-' + w));
    if (value !== null) any = true;
    if (value !== (before[w] || null)) {
      limits[w] = value;
      changed = true;
    }
  }
  if (changed) patch.rate_limit = any ? limits : null;
  return patch;
}

async function submit(event) {
  event.preventDefault();
  const map = inputs();
  clearFormError($('org-form-error'), map);
  let patch;
  try {
    patch = readPatch();
  } catch (e) {
    formError($('org-form-error'), e, map);
    return;
  }
  if (Object.keys(patch).length === 0) {
    showBanner('Nothing changed.', 'info');
    return;
  }
  $('org-submit').disabled = true;
  try {
    const org = await api('PATCH', orgPath(), patch);
    current = org;
    const i = state.orgs.findIndex((o) => o.id === org.id);
    if (i >= 0) state.orgs[i] = org;
    state.org = org;
    showBanner('Settings of “' + org.name + '” saved.', 'success');
    emit('org-changed', org);
    await showOrgSettings();
  } catch (e) {
    formError($('org-form-error'), e, map);
  } finally {
    $('org-submit').disabled = false;
  }
}

export function openNewOrg() {
  $('org-new-form').reset();
  clearFormError($('org-new-error'), { id: $('on-id'), name: $('on-name') });
  $('org-new-dialog').showModal();
  $('on-id').focus();
}

async function submitNewOrg(event) {
  event.preventDefault();
  const fields = { id: $('on-id'), name: $('on-name') };
  clearFormError($('org-new-error'), fields);
  const body = { id: $('on-id').value.trim(), name: $('on-name').value.trim() };
  $('org-new-submit').disabled = true;
  try {
    const org = await api('POST', '/v1/orgs', body);
    $('org-new-dialog').close();
    showBanner('Organisation “' + org.name + '” created.', 'success');
    emit('org-created', org);
  } catch (e) {
    formError($('org-new-error'), e, fields);
  } finally {
    $('org-new-submit').disabled = false;
  }
}

export function wireOrgSettings() {
  $('org-form').addEventListener('submit', submit);
  $('org-new').addEventListener('click', openNewOrg);
  $('no-orgs-new').addEventListener('click', openNewOrg);
  $('org-new-form').addEventListener('submit', submitNewOrg);
  $('org-new-cancel').addEventListener('click', () => $('org-new-dialog').close());
}
