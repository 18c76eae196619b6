// keygate admin page: a client of the admin API on the same origin. This entry module
// signs in and out, asks the server who is signed in (GET /v1/whoami) and switches
// between the pages; each page is its own module:
//
//   api.js           the API client (the only reader of the token)
//   dom.js           elements as text, messages, confirmation, the show-once panel
//   format.js        times and counts
//   state.js         session state, role checks, a small event bus
//   keys.js          API keys list, create/edit, regenerate, revoke, delete
//   key-detail.js    one key: fields, restrictions, limits, usage, export, audit
//   limits.js        where a key stands against its limits (80 % warning)
//   usage-chart.js   the usage chart and tables
//   people.js        People: principals, tokens shown once, API access
//   audit.js         the audit log with key and actor filters
//   org-settings.js  key policy, key lifetime, org rate limits (owners)
//
// Rules every module keeps: the admin token lives in sessionStorage only and is sent
// only in the Authorization header; server data reaches the page as text only; a new
// secret exists only in the show-once panel until it is dismissed.

import { ApiError, api, clearToken, onUnauthorized, setToken, token } from './api.js';
import { $, describe, dismissSecret, h, hideBanner, showBanner, showError, wireConfirm } from './dom.js';
import { showAudit, resetAudit, wireAudit } from './audit.js';
import { closeDetail, openDetail, wireDetail } from './key-detail.js';
import { applyRole, loadKeys, resetKeys, wireKeys } from './keys.js';
import { showOrgSettings, wireOrgSettings } from './org-settings.js';
import { confirmRotateOwn, loadPeople, showPeople, wirePeople } from './people.js';
import { can, on, state } from './state.js';

const ORG_KEY = 'keygate.org';

const PAGES = {
  keys: { section: 'keys-card', nav: 'nav-keys', title: 'API keys' },
  key: { section: 'key-detail', nav: 'nav-keys', title: 'API key' },
  people: { section: 'people-card', nav: 'nav-people', title: 'People', needs: 'manage_principals' },
  audit: { section: 'audit-card', nav: 'nav-audit', title: 'Audit', needs: 'read_audit' },
  org: { section: 'org-card', nav: 'nav-org', title: 'Org settings', needs: 'manage_orgs' },
};

let page = 'keys';

function showPage(name) {
  const target = PAGES[name] && (!PAGES[name].needs || can(PAGES[name].needs)) ? name : 'keys';
  if (page === 'key' && target !== 'key') closeDetail();
  page = target;
  for (const [key, p] of Object.entries(PAGES)) $(p.section).hidden = key !== target;
  for (const p of Object.values(PAGES)) $(p.nav).removeAttribute('aria-current');
  $(PAGES[target].nav).setAttribute('aria-current', 'page');
  document.title = PAGES[target].title + ' · keygate';
  if (target === 'people') showPeople();
  if (target === 'org') showOrgSettings();
}

// ---------------------------------------------------------------- sign in / out

async function signIn(t) {
  setToken(t);
  try {
    if (!(await loadSession())) return;
  } catch (e) {
    // A 401 has already signed out, with the server's reason in the banner.
    if (!(e instanceof ApiError && e.status === 401)) {
      clearToken();
      showError(e);
    }
    return;
  }
  hideBanner();
}

function signOut(message, kind) {
  clearToken();
  sessionStorage.removeItem(ORG_KEY);
  dismissSecret();
  for (const d of document.querySelectorAll('dialog[open]')) d.close();
  closeDetail();
  state.me = null;
  state.orgs = [];
  state.org = null;
  state.people = new Map();
  resetKeys();
  resetAudit();
  $('people-body').textContent = '';
  $('org-select').textContent = '';
  $('who').textContent = '';
  $('session').hidden = true;
  $('nav').hidden = true;
  for (const p of Object.values(PAGES)) $(p.section).hidden = true;
  $('no-orgs').hidden = true;
  $('sign-in').hidden = false;
  $('token').value = '';
  if (message) showBanner(message, kind || 'info');
  else hideBanner();
  $('token').focus();
}

/** Who is signed in, what it may do, and which orgs it sees. */
async function loadSession() {
  state.me = await api('GET', '/v1/whoami');
  if (state.me.principal.role === 'verifier') {
    // A verifier's token only checks keys (POST /v1/verify): nothing to show here.
    signOut(
      'This token belongs to a verifier, which may only call POST /v1/verify for its services; ' +
        'sign in with an owner, admin, manager or viewer token to use this page.',
      'info',
    );
    return false;
  }
  const answer = await api('GET', '/v1/orgs');
  state.orgs = (answer && answer.data) || [];
  if (can('manage_principals')) {
    try {
      await loadPeople();
    } catch (e) {
      showError(e);
    }
  }
  const me = state.me.principal;
  $('sign-in').hidden = true;
  $('token').value = '';
  $('session').hidden = false;
  $('nav').hidden = false;
  $('who').textContent = me.name + ' · ' + me.role;
  $('who').title = me.id;
  $('nav-people').hidden = !can('manage_principals');
  $('nav-audit').hidden = !can('read_audit');
  $('nav-org').hidden = !can('manage_orgs');
  applyRole();
  fillOrgs();
  if (state.orgs.length === 0) {
    for (const p of Object.values(PAGES)) $(p.section).hidden = true;
    $('no-orgs-new').hidden = !can('manage_orgs');
    $('no-orgs').hidden = false;
    return true;
  }
  $('no-orgs').hidden = true;
  const remembered = sessionStorage.getItem(ORG_KEY);
  const org = state.orgs.find((o) => o.id === remembered) || state.orgs[0];
  $('org-select').value = org.id;
  await selectOrg(org.id);
  return true;
}

function fillOrgs() {
  const select = $('org-select');
  const chosen = state.org ? state.org.id : null;
  select.textContent = '';
  for (const org of state.orgs) {
    select.append(h('option', { value: org.id, text: org.name && org.name !== org.id ? org.name + ' (' + org.id + ')' : org.id }));
  }
  select.disabled = state.orgs.length === 0;
  if (chosen) select.value = chosen;
}

function orgTitle() {
  const title = [state.org.name || state.org.id];
  if (state.org.max_key_lifetime_days) title.push('keys live at most ' + state.org.max_key_lifetime_days + ' days');
  if (state.org.key_policy === 'creator') title.push('keys stop when their creator is disabled');
  $('org-title').textContent = title.join(' · ');
}

async function selectOrg(id) {
  state.org = state.orgs.find((o) => o.id === id) || null;
  if (!state.org) return;
  sessionStorage.setItem(ORG_KEY, state.org.id);
  // A secret panel stays across an org switch: it names its key and org, and the
  // secret would otherwise be lost to a stray click.
  orgTitle();
  resetAudit();
  showPage(page === 'key' ? 'keys' : page);
  if (page === 'audit') showAudit();
  await loadKeys(false);
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
  $('rotate-own').addEventListener('click', confirmRotateOwn);
  $('banner-close').addEventListener('click', hideBanner);
  $('org-select').addEventListener('change', (e) => selectOrg(e.target.value));
  for (const [name, p] of Object.entries(PAGES)) {
    if (name === 'key') continue;
    $(p.nav).addEventListener('click', () => {
      showPage(name);
      if (name === 'audit') showAudit();
    });
  }
  $('detail-back').addEventListener('click', () => showPage('keys'));
  on('open-key', (key) => {
    showPage('key');
    openDetail(key);
  });
  on('key-deleted', () => {
    if (page === 'key') showPage('keys');
  });
  on('audit-for-key', (id) => {
    showPage('audit');
    showAudit(id);
  });
  on('org-created', async (org) => {
    sessionStorage.setItem(ORG_KEY, org.id);
    try {
      await loadSession();
    } catch (e) {
      showError(e);
    }
  });
  on('org-changed', () => {
    fillOrgs();
    orgTitle();
  });
  onUnauthorized((e) => signOut('The admin token was refused: ' + e.message, 'error'));
  wireConfirm();
  wireKeys();
  wireDetail();
  wirePeople();
  wireAudit();
  wireOrgSettings();
}

function start() {
  wire();
  if (token()) {
    $('sign-in').hidden = true;
    loadSession().catch((e) => {
      if (!(e instanceof ApiError && e.status === 401)) signOut(describe(e), 'error');
    });
  } else {
    signOut(null);
  }
}

start();
