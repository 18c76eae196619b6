// The Audit page (owners and admins): who did what when in the chosen org, newest
// first, a page at a time, filtered by key id and by actor.

import { api } from './api.js';
import { $, h, showError } from './dom.js';
import { timeText } from './format.js';
import { orgPath, personName, state } from './state.js';

const PAGE_SIZE = 50;

const audit = { events: [], next: null, generation: 0 };

/** Shows the page, optionally filtered to one key. */
export async function showAudit(keyId) {
  if (keyId !== undefined) $('audit-key').value = keyId || '';
  fillActors();
  await loadAudit(false);
}

function fillActors() {
  const select = $('audit-actor');
  const chosen = select.value;
  select.textContent = '';
  select.append(h('option', { value: '', text: 'Anyone' }));
  const me = state.me.principal;
  const known = new Map(state.people);
  if (!known.has(me.id)) known.set(me.id, me.name);
  for (const [id, name] of known) select.append(h('option', { value: id, text: name + (id === me.id ? ' (you)' : '') }));
  select.value = Array.from(known.keys()).includes(chosen) ? chosen : '';
}

async function loadAudit(more) {
  if (!state.org) return;
  const generation = more ? audit.generation : ++audit.generation;
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const key = $('audit-key').value.trim();
  const actor = $('audit-actor').value;
  if (key) params.set('key', key);
  if (actor) params.set('actor', actor);
  if (more && audit.next) params.set('cursor', audit.next);
  $('audit-more').disabled = true;
  try {
    const answer = await api('GET', orgPath() + '/audit?' + params.toString());
    if (generation !== audit.generation) return;
    const page = (answer && answer.data) || [];
    audit.events = more ? audit.events.concat(page) : page;
    audit.next = (answer && answer.next_cursor) || null;
    render();
  } catch (e) {
    if (generation === audit.generation) showError(e);
  } finally {
    $('audit-more').disabled = false;
  }
}

function render() {
  const body = $('audit-body');
  body.textContent = '';
  for (const e of audit.events) {
    body.append(h('tr', { 'data-audit-id': e.id, 'data-action': e.action, 'data-actor': e.actor },
      h('td', {}, timeText(e.at, '—', 'full')),
      h('td', { text: personName(e.actor) }),
      h('td', {}, h('code', { text: e.action })),
      h('td', { className: 'mono small', text: e.target || '—' }),
      h('td', { className: 'mono small details', text: JSON.stringify(e.details || {}) })));
  }
  $('audit-empty').hidden = audit.events.length > 0;
  $('audit-table').hidden = audit.events.length === 0;
  $('audit-more').hidden = !audit.next;
}

export function resetAudit() {
  audit.events = [];
  audit.next = null;
  audit.generation += 1;
  $('audit-body').textContent = '';
}

export function wireAudit() {
  $('audit-filter').addEventListener('submit', (event) => {
    event.preventDefault();
    loadAudit(false);
  });
  $('audit-clear').addEventListener('click', () => {
    $('audit-key').value = '';
    $('audit-actor').value = '';
    loadAudit(false);
  });
  $('audit-more').addEventListener('click', () => loadAudit(true));
}
