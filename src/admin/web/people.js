// The People page (owners and admins): admin principals, add one (its token shown
// once), API access, disable and enable, delete. Role and org choices are only those
// the signed-in principal may grant (whoami's grantable_roles, its own orgs).

import { api, setToken } from './api.js';
import { $, actionButton, clearFormError, formError, h, openConfirm, showBanner, showError, showOnce } from './dom.js';
import { timeCell } from './format.js';
import { can, state } from './state.js';

const ROLE_HINTS = {
  owner: 'Every organisation; manages organisations and people of any role.',
  admin: 'Its organisations: keys, usage, audit, and managers, viewers and verifiers.',
  manager: 'Creates, edits and regenerates keys of its organisations while API access is on.',
  viewer: 'Reads keys and usage; changes nothing.',
  verifier: 'Only checks keys of its organisations (POST /v1/verify), for a service; sees nothing else.',
};

let people = [];

/** Whether the signed-in principal may change `p` (SPEC §5; nobody disables itself). */
function manages(p) {
  const me = state.me && state.me.principal;
  if (!me || p.id === me.id || !can('manage_principals')) return false;
  if (me.role === 'owner') return true;
  return me.role === 'admin' && ['manager', 'viewer', 'verifier'].includes(p.role);
}

const orgText = (orgs) => (orgs === '*' ? 'All' : (orgs || []).join(', '));

/** Loads the principals the caller sees; also names actors elsewhere on the page. */
export async function loadPeople() {
  if (!can('manage_principals')) return [];
  const answer = await api('GET', '/v1/principals');
  people = (answer && answer.data) || [];
  state.people = new Map(people.map((p) => [p.id, p.name]));
  return people;
}

export async function showPeople() {
  try {
    await loadPeople();
    renderPeople();
  } catch (e) {
    showError(e);
  }
}

function renderPeople() {
  const body = $('people-body');
  body.textContent = '';
  const me = state.me.principal;
  for (const p of people) {
    const mine = manages(p);
    let access;
    if (p.role === 'manager') {
      const box = h('input', { type: 'checkbox', 'data-action': 'api-access', 'aria-label': 'API access for ' + p.name, disabled: !mine });
      box.checked = p.api_access;
      box.addEventListener('change', () => setApiAccess(p, box));
      access = h('td', {}, h('label', { className: 'check' }, box, p.api_access ? ' On' : ' Off'));
    } else {
      access = h('td', {
        className: 'muted',
        text: p.role === 'viewer' ? 'Never (read only)' : p.role === 'verifier' ? 'Never (verify only)' : 'Always (' + p.role + ')',
      });
    }
    const actions = [];
    if (p.id === me.id) actions.push(actionButton('rotate', 'Rotate my token', 'secondary', confirmRotateOwn));
    if (mine) {
      actions.push(p.disabled
        ? actionButton('enable', 'Enable', 'secondary', () => setDisabled(p, false))
        : actionButton('disable', 'Disable', 'danger-outline', () => confirmDisable(p)));
      actions.push(actionButton('delete', 'Delete', 'danger-outline', () => confirmDeletePerson(p)));
    }
    body.append(h('tr', { 'data-principal-id': p.id, 'data-role': p.role, 'data-disabled': String(p.disabled) },
      h('td', { className: 'name-cell' }, h('div', { className: 'key-name', text: p.name }),
        h('div', { className: 'muted small', text: p.id + (p.id === me.id ? ' · you' : '') })),
      h('td', {}, h('span', { className: 'chip', text: p.role })),
      h('td', { text: orgText(p.orgs) }),
      access,
      h('td', {}, h('span', { className: 'status ' + (p.disabled ? 'suspended' : 'active'), text: p.disabled ? 'disabled' : 'active' })),
      timeCell(p.created_at, '—', false),
      h('td', { className: 'actions-col' }, h('div', { className: 'row-actions' }, actions))));
  }
}

async function setApiAccess(p, box) {
  box.disabled = true;
  try {
    await api('PATCH', '/v1/principals/' + encodeURIComponent(p.id), { api_access: box.checked });
    showBanner('API access for “' + p.name + '” is now ' + (box.checked ? 'on' : 'off') + '.', 'success');
  } catch (e) {
    showError(e);
  }
  await showPeople();
}

async function setDisabled(p, disabled) {
  try {
    await api('PATCH', '/v1/principals/' + encodeURIComponent(p.id), { disabled });
    showBanner('“' + p.name + '” is ' + (disabled ? 'disabled: its token no longer works.' : 'enabled again.'), 'success');
  } catch (e) {
    showError(e);
  }
  await showPeople();
}

function confirmDisable(p) {
  openConfirm('Disable “' + p.name + '”?',
    'Its admin token stops working at once. Keys it created keep working unless the organisation’s key policy is “creator”, which suspends them while it is disabled.',
    'Disable', async () => {
      await api('PATCH', '/v1/principals/' + encodeURIComponent(p.id), { disabled: true });
      showBanner('“' + p.name + '” is disabled: its token no longer works.', 'success');
      await showPeople();
    });
}

function confirmDeletePerson(p) {
  openConfirm('Delete “' + p.name + '”?',
    'Its admin token stops working at once, for good. Under the “creator” key policy its keys are suspended for good. This cannot be undone.',
    'Delete person', async () => {
      await api('DELETE', '/v1/principals/' + encodeURIComponent(p.id));
      showBanner('“' + p.name + '” deleted.', 'success');
      await showPeople();
    });
}

/** Rotating one's own token: the new one replaces the session's at once. */
export function confirmRotateOwn() {
  const me = state.me.principal;
  openConfirm('Rotate your admin token?',
    'A new token is issued and shown once; the current one stops working at once, in every tab and script that uses it. This tab switches to the new token.',
    'Rotate token', async () => {
      const answer = await api('POST', '/v1/principals/' + encodeURIComponent(me.id) + '/rotate-token', {});
      setToken(answer.token);
      showOnce('Your new admin token', answer.token, 'keygate stores only a hash of it. This tab already uses it.', me.name + ' · ' + me.id + ' · ' + me.role);
      showBanner('Token rotated; the old one no longer works.', 'success');
    });
}

// ---------------------------------------------------------------- add a person

function personInputs() {
  return { name: $('p-name'), role: $('p-role'), orgs: $('p-org-options'), api_access: $('p-api') };
}

function onRoleChange() {
  const role = $('p-role').value;
  $('p-role-hint').textContent = ROLE_HINTS[role] || '';
  $('p-orgs').hidden = role === 'owner';
  // Administrators have API access by default; managers must be granted it.
  $('p-api').checked = role === 'admin' || role === 'owner';
  $('p-api').disabled = role === 'viewer' || role === 'verifier';
  if (role === 'viewer' || role === 'verifier') $('p-api').checked = false;
}

function openPersonDialog() {
  $('person-form').reset();
  clearFormError($('person-form-error'), personInputs());
  const roles = (state.me && state.me.grantable_roles) || [];
  const select = $('p-role');
  select.textContent = '';
  for (const r of roles) select.append(h('option', { value: r, text: r }));
  select.value = roles.includes('manager') ? 'manager' : roles[0] || '';
  const box = $('p-org-options');
  box.textContent = '';
  for (const org of state.orgs) {
    const input = h('input', { type: 'checkbox', name: 'org', value: org.id });
    input.checked = state.org && org.id === state.org.id;
    box.append(h('label', { className: 'check' }, input, ' ' + (org.name || org.id)));
  }
  onRoleChange();
  $('person-dialog').showModal();
  $('p-name').focus();
}

async function submitPerson(event) {
  event.preventDefault();
  const inputs = personInputs();
  clearFormError($('person-form-error'), inputs);
  const role = $('p-role').value;
  const body = { name: $('p-name').value.trim(), role, api_access: $('p-api').checked };
  if (role !== 'owner') body.orgs = Array.from(document.querySelectorAll('#p-org-options input:checked')).map((i) => i.value);
  $('person-submit').disabled = true;
  try {
    const answer = await api('POST', '/v1/principals', body);
    $('person-dialog').close();
    const p = answer.principal;
    showOnce('Admin token for “' + p.name + '”', answer.token,
      'Give it to ' + p.name + ' over a private channel; they sign in here with it. keygate stores only a hash.',
      p.name + ' · ' + p.id + ' · ' + p.role + ' · ' + orgText(p.orgs));
    showBanner('“' + p.name + '” added as ' + p.role + '.', 'success');
    await showPeople();
  } catch (e) {
    formError($('person-form-error'), e, inputs);
  } finally {
    $('person-submit').disabled = false;
  }
}

export function wirePeople() {
  $('people-refresh').addEventListener('click', showPeople);
  $('new-person').addEventListener('click', openPersonDialog);
  $('p-role').addEventListener('change', onRoleChange);
  $('person-form').addEventListener('submit', submitPerson);
  $('person-cancel').addEventListener('click', () => $('person-dialog').close());
}

