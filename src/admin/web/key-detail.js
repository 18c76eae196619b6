// One key in full: every field, its restrictions, where it stands against each limit,
// its usage chart with CSV and JSON export of the chosen range, and its audit events.

import { ApiError, api, download } from './api.js';
import { $, describe, h } from './dom.js';
import { formatTime, timeText } from './format.js';
import { fetchStanding, standingDetail } from './limits.js';
import { isRestricted, keyActions, restrictionBadge } from './keys.js';
import { can, emit, keyPath, on, personName, state } from './state.js';
import { rangeQuery, renderUsage } from './usage-chart.js';

const detail = {
  key: null,
  // The range the chart shows; the export downloads exactly this one.
  query: null,
};

export const shownKey = () => detail.key;

export async function openDetail(key) {
  // Another key starts on the last 24 hours; the same key (after an edit) keeps its range.
  if (!detail.key || detail.key.id !== key.id) $('usage-range').value = '24h';
  $('export-status').textContent = '';
  detail.key = key;
  render(key);
  $('detail-back').focus();
  try {
    const fresh = await api('GET', keyPath(key.id));
    if (detail.key && detail.key.id === key.id && fresh) {
      detail.key = fresh;
      render(fresh);
    }
  } catch (e) {
    if (detail.key && detail.key.id === key.id) $('detail-subtitle').textContent = describe(e);
  }
}

export function closeDetail() {
  detail.key = null;
  detail.query = null;
  $('usage-body').textContent = '';
  $('detail-limits').textContent = '';
  $('detail-audit').textContent = '';
}

function render(key) {
  $('detail-title').textContent = key.name;
  $('detail-subtitle').textContent = key.prefix + '… · ' + key.id + ' · ' + key.environment + ' · ' + key.status;
  const actions = $('detail-actions');
  actions.textContent = '';
  actions.append(h('span', { className: 'status ' + key.status, text: key.status }), restrictionBadge(key), ...keyActions(key));

  const fields = $('detail-fields');
  fields.textContent = '';
  const add = (list, name, value) => list.append(h('div', { 'data-field': name }, h('dt', { text: name }), h('dd', {}, value)));
  add(fields, 'id', h('code', { text: key.id }));
  add(fields, 'org', key.org);
  add(fields, 'name', key.name);
  add(fields, 'description', key.description || h('span', { className: 'muted', text: '—' }));
  add(fields, 'environment', key.environment);
  add(fields, 'prefix', h('code', { text: key.prefix + '…' }));
  add(fields, 'scopes', (key.scopes || []).join(', '));
  add(fields, 'status', key.status);
  add(fields, 'created_at', timeText(key.created_at, '—', false));
  add(fields, 'created_by', key.created_by ? personName(key.created_by) : '—');
  add(fields, 'updated_at', timeText(key.updated_at, '—', false));
  add(fields, 'last_used_at', key.last_used_at ? formatTime(key.last_used_at) : h('span', { className: 'muted', text: 'Never' }));
  add(fields, 'expires_at', key.expires_at ? formatTime(key.expires_at) : h('span', { className: 'muted', text: 'Never' }));
  if (key.grace_ends_at) add(fields, 'grace_ends_at', formatTime(key.grace_ends_at));
  if (key.revoked_at) add(fields, 'revoked_at', formatTime(key.revoked_at));

  const restr = $('detail-restrictions');
  restr.textContent = '';
  const restriction = (name, values, what) => add(restr, name, Array.isArray(values)
    ? h('span', {}, h('strong', { text: 'Restricted: ' }), values.map(String).join(', '))
    : h('span', { className: 'muted', text: 'Unrestricted (' + what + ')' }));
  restriction('ip_allow', key.ip_allow, 'any IP address');
  restriction('resources', key.resources, 'any resource');
  restriction('endpoints', key.endpoints, 'any route');
  add(restr, 'rate_limit', key.rate_limit && Object.keys(key.rate_limit).length
    ? Object.entries(key.rate_limit).map(([w, n]) => n + ' ' + w.replace('_', ' ')).join(', ')
    : h('span', { className: 'muted', text: 'org or gateway defaults' }));
  restr.dataset.restricted = isRestricted(key) ? 'true' : 'false';

  loadLimits(key);
  loadUsage();
  loadAudit(key);
}

async function loadLimits(key) {
  const box = $('detail-limits');
  box.textContent = '';
  box.append(h('p', { className: 'muted', text: 'Loading limits…' }));
  try {
    const standing = await fetchStanding(key.id);
    if (!detail.key || detail.key.id !== key.id) return;
    box.textContent = '';
    box.append(...standingDetail(standing));
  } catch (e) {
    if (!detail.key || detail.key.id !== key.id) return;
    box.textContent = '';
    box.append(h('div', { className: 'form-error', role: 'alert', text: describe(e) }));
  }
}

async function loadUsage() {
  const key = detail.key;
  if (!key) return;
  const query = rangeQuery($('usage-range').value);
  detail.query = query;
  const params = new URLSearchParams(Object.assign({ format: 'json' }, query));
  const body = $('usage-body');
  body.textContent = '';
  body.append(h('p', { className: 'muted', text: 'Loading usage…' }));
  try {
    const report = await api('GET', keyPath(key.id) + '/usage?' + params.toString());
    if (detail.key !== key) return;
    body.textContent = '';
    renderUsage(body, report || {}, query.granularity);
  } catch (e) {
    if (detail.key !== key) return;
    body.textContent = '';
    if (e instanceof ApiError && (e.status === 404 || e.status === 405 || e.status === 501)) {
      body.append(h('div', { id: 'usage-unavailable', className: 'notice' },
        h('strong', { text: 'Usage is not available.' }),
        ' This server does not report usage for this key (' + e.describe() + ').'));
    } else {
      body.append(h('div', { className: 'form-error', role: 'alert', text: describe(e) }));
    }
  }
}

async function exportUsage(format) {
  const key = detail.key;
  if (!key || !detail.query) return;
  const params = new URLSearchParams(Object.assign({ format }, detail.query));
  const name = 'usage-' + key.id + '-' + $('usage-range').value + '.' + format;
  const button = $('export-' + format);
  button.disabled = true;
  try {
    await download(keyPath(key.id) + '/usage?' + params.toString(), name, format === 'csv' ? 'text/csv' : 'application/json');
    $('export-status').textContent = 'Downloaded ' + name + '.';
  } catch (e) {
    $('export-status').textContent = 'Export failed: ' + describe(e);
  } finally {
    button.disabled = false;
  }
}

async function loadAudit(key) {
  const box = $('detail-audit');
  box.textContent = '';
  if (!can('read_audit')) {
    box.append(h('p', { className: 'muted', text: 'Audit records are shown to owners and admins.' }));
    return;
  }
  try {
    const params = new URLSearchParams({ key: key.id, limit: '20' });
    const answer = await api('GET', '/v1/orgs/' + encodeURIComponent(key.org) + '/audit?' + params.toString());
    if (!detail.key || detail.key.id !== key.id) return;
    const events = (answer && answer.data) || [];
    if (events.length === 0) {
      box.append(h('p', { className: 'muted', text: 'No audit events for this key.' }));
      return;
    }
    box.append(h('table', { id: 'detail-audit-table', className: 'small-table' },
      h('thead', {}, h('tr', {}, ['When', 'Who', 'Action', 'Details'].map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', {}, events.map((e) => h('tr', { 'data-action': e.action },
        h('td', {}, timeText(e.at, '—', 'full')),
        h('td', { text: personName(e.actor) }),
        h('td', { text: e.action }),
        h('td', { className: 'mono small', text: JSON.stringify(e.details || {}) }))))));
    box.append(h('button', { type: 'button', className: 'secondary small', id: 'detail-audit-all', text: 'All events of this key in the audit log',
      onclick: () => emit('audit-for-key', key.id) }));
  } catch (e) {
    box.append(h('div', { className: 'form-error', role: 'alert', text: describe(e) }));
  }
}

export function wireDetail() {
  $('usage-range').addEventListener('change', loadUsage);
  $('export-csv').addEventListener('click', () => exportUsage('csv'));
  $('export-json').addEventListener('click', () => exportUsage('json'));
  on('keys-changed', (key) => {
    if (key && detail.key && detail.key.id === key.id) openDetail(key);
  });
}
