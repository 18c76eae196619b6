// Where a key stands against each rate-limit window, and its failed authentications
// (GET …/keys/{id}/limits): a one-line summary for the key list, a table for the
// detail view. A window at 80 % or more of its limit is a visible warning.

import { api } from './api.js';
import { h } from './dom.js';
import { WINDOW_NAMES, formatTime } from './format.js';
import { keyPath } from './state.js';

export const WARN_AT = 0.8;

export const fetchStanding = (id) => api('GET', keyPath(id) + '/limits');

/** The windows whose use is known, with their share of the limit, fullest first. */
function shares(standing) {
  return (standing.windows || [])
    .filter((w) => typeof w.limit === 'number' && w.limit > 0 && typeof w.used === 'number')
    .map((w) => ({ window: w, share: w.used / w.limit }))
    .sort((a, b) => b.share - a.share);
}

const percent = (share) => Math.round(share * 100) + ' %';

/** The list's cell content: the fullest window, and failed authentications if any. */
export function standingSummary(standing) {
  const parts = [];
  const fullest = shares(standing)[0];
  const limited = (standing.windows || []).filter((w) => typeof w.limit === 'number');
  if (fullest) {
    const near = fullest.share >= WARN_AT;
    parts.push(h('div', { className: near ? 'near-limit' : 'muted small', 'data-near-limit': near ? 'true' : null,
      title: fullest.window.used + ' of ' + fullest.window.limit + ' ' + WINDOW_NAMES[fullest.window.window] },
    (near ? '⚠ ' : '') + percent(fullest.share) + ' of ' + WINDOW_NAMES[fullest.window.window]));
  } else if (limited.length) {
    parts.push(h('div', { className: 'muted small', text: limited.map((w) => w.limit + ' ' + WINDOW_NAMES[w.window]).join(', ') }));
  } else {
    parts.push(h('div', { className: 'muted small', text: 'No limit' }));
  }
  const failed = standing.last_24h ? standing.last_24h.failed_auth : 0;
  if (failed > 0) {
    parts.push(h('div', { className: 'failed-auth', 'data-failed-auth': String(failed), text: failed + ' failed auth' }));
  }
  return parts;
}

/** The detail view's table of every window, and the failed authentications. */
export function standingDetail(standing) {
  const rows = (standing.windows || []).map((w) => {
    const limited = typeof w.limit === 'number';
    const known = limited && typeof w.used === 'number';
    const share = known && w.limit > 0 ? w.used / w.limit : null;
    const near = share !== null && share >= WARN_AT;
    const use = known
      ? h('td', {},
        h('meter', { min: 0, max: w.limit, value: Math.min(w.used, w.limit), low: w.limit * WARN_AT - 0.5, high: w.limit * WARN_AT - 0.5, optimum: 0, 'aria-label': WINDOW_NAMES[w.window] + ' used' }),
        ' ' + w.used + ' (' + percent(share) + ')',
        near ? h('strong', { className: 'near-limit', text: ' ⚠ Warning: ' + percent(share) + ' of the ' + WINDOW_NAMES[w.window] + ' limit used' }) : null)
      : h('td', { className: 'muted', text: limited ? 'counted live only (see RateLimit-* headers)' : '—' });
    return h('tr', { 'data-window': w.window, 'data-near-limit': near ? 'true' : null },
      h('th', { scope: 'row', text: WINDOW_NAMES[w.window] }),
      h('td', { text: limited ? String(w.limit) : 'No limit' }),
      h('td', { className: 'muted', text: w.source ? 'from the ' + w.source : '—' }),
      use,
      h('td', { text: limited ? formatTime(w.resets_at) : '—' }));
  });
  const table = h('table', { id: 'limits-table', className: 'small-table' },
    h('caption', { text: 'Rate limits now' }),
    h('thead', {}, h('tr', {}, ['Window', 'Limit', 'Set', 'Used in this window', 'Resets'].map((t) => h('th', { scope: 'col', text: t })))),
    h('tbody', {}, rows));
  const recent = standing.last_24h || { failed_auth: 0, failed_auth_by_code: {}, rate_limited: 0, requests: 0 };
  const codes = Object.entries(recent.failed_auth_by_code || {}).map(([c, n]) => c + ': ' + n).join(', ');
  const alerts = h('p', { id: 'failed-auth', className: recent.failed_auth > 0 ? 'near-limit' : 'muted' },
    (recent.failed_auth > 0 ? '⚠ ' : '') + 'Failed authentications in the last 24 hours: ' + recent.failed_auth + (codes ? ' (' + codes + ')' : '') +
    '. Rate-limited requests: ' + recent.rate_limited + ' of ' + recent.requests + '.');
  return [alerts, table];
}
