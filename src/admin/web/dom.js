// DOM helpers: elements built from data as text only (never markup), messages, form
// errors, the confirmation dialog and the show-once panel for secrets and tokens.

import { ApiError } from './api.js';

export const $ = (id) => {
  const el = document.getElementById(id);
  if (!el) throw new Error('page element #' + id + ' is missing');
  return el;
};

/** A DOM element: attrs are set as attributes (`text` as textContent), children as text or nodes. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'text') el.textContent = String(value);
    else if (name === 'className') el.className = value;
    else if (name === 'onclick') el.addEventListener('click', value);
    else if (name === 'onchange') el.addEventListener('change', value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
/** An SVG element, like `h`. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === 'text') el.textContent = String(value);
    else el.setAttribute(name, String(value));
  }
  for (const child of children.flat()) if (child) el.append(child);
  return el;
}

/** A small button carrying `data-action`, as in every table row. */
export function actionButton(action, label, cls, handler, extra) {
  return h('button', Object.assign({ type: 'button', className: 'small ' + (cls || 'secondary'), 'data-action': action, onclick: handler, text: label }, extra || {}));
}

export const describe = (e) => (e instanceof ApiError ? e.describe() : String(e && e.message ? e.message : e));

// ---------------------------------------------------------------- messages

export function showBanner(message, kind) {
  $('banner-text').textContent = message;
  $('banner').className = 'banner ' + (kind || 'error');
  $('banner').hidden = false;
}
export function hideBanner() {
  $('banner').hidden = true;
  $('banner-text').textContent = '';
}
export function showError(e) {
  showBanner(describe(e), 'error');
}

/** Shows a server error inside a form and marks the input of the field it names. */
export function formError(box, e, fieldInputs) {
  box.textContent = '';
  if (e instanceof ApiError) {
    box.append(h('strong', { text: e.message }));
    if (e.field) box.append(h('div', { className: 'field-name', text: 'Field: ' + e.field }));
    box.append(h('div', { className: 'code', text: (e.status ? e.status + ' ' : '') + e.code }));
    const input = e.field && fieldInputs ? fieldInputs[e.field] || fieldInputs[e.field.replace(/\[\d+\]$/, '')] : null;
    if (input) {
      input.classList.add('invalid');
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    }
  } else {
    box.append(h('strong', { text: describe(e) }));
  }
  box.hidden = false;
  box.scrollIntoView({ block: 'nearest' });
}
export function clearFormError(box, fieldInputs) {
  box.hidden = true;
  box.textContent = '';
  for (const input of Object.values(fieldInputs || {})) {
    input.classList.remove('invalid');
    input.removeAttribute('aria-invalid');
  }
}

// ---------------------------------------------------------------- confirmation

let confirmAction = null;

/** Asks before `action` (async); its error stays in the dialog. */
export function openConfirm(title, text, okLabel, action) {
  confirmAction = action;
  clearFormError($('confirm-error'));
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = okLabel;
  $('confirm-dialog').showModal();
  $('confirm-cancel').focus();
}

export function wireConfirm() {
  $('confirm-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!confirmAction) return;
    $('confirm-ok').disabled = true;
    try {
      const action = confirmAction;
      await action();
      confirmAction = null;
      $('confirm-dialog').close();
    } catch (e) {
      formError($('confirm-error'), e);
    } finally {
      $('confirm-ok').disabled = false;
    }
  });
  $('confirm-cancel').addEventListener('click', () => {
    confirmAction = null;
    $('confirm-dialog').close();
  });
}

// ---------------------------------------------------------------- show once

// The live panel's teardown, or null: the only place a secret is referenced from.
let secretTeardown = null;

/**
 * Shows a secret (an API key or an admin token) once, with a copy button. Dismissing
 * the panel removes it from the DOM and drops every reference to it.
 */
export function showOnce(title, value, warning, meta) {
  dismissSecret();
  const input = h('input', { id: 'secret-value', className: 'mono', readonly: true, spellcheck: 'false', autocomplete: 'off', 'aria-label': 'Secret' });
  input.value = value;
  const status = h('span', { id: 'copy-status', className: 'copy-status', 'aria-live': 'polite' });
  const copy = h('button', { id: 'copy-secret', type: 'button', text: 'Copy' });
  const done = h('button', { id: 'dismiss-secret', type: 'button', className: 'secondary', text: 'I have stored it — hide the secret' });
  const panel = h('section', { id: 'secret-panel', className: 'secret-panel', role: 'region', 'aria-label': 'New secret' },
    h('h2', { text: title }),
    h('p', { className: 'warning' }, h('strong', { text: 'Copy this secret now. It will not be shown again.' }), ' ' + warning),
    h('div', { className: 'secret-row' }, input, copy),
    h('div', { className: 'secret-foot' }, h('span', { className: 'muted small', text: meta }), status, done));
  copy.addEventListener('click', async () => {
    input.focus();
    input.select();
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard');
      await navigator.clipboard.writeText(input.value);
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
  input.addEventListener('focus', () => input.select());
  done.addEventListener('click', () => {
    dismissSecret();
    showBanner('The secret is hidden for good. If it was not stored, issue a new one.', 'info');
  });
  $('secret-slot').append(panel);
  secretTeardown = () => {
    input.value = '';
    panel.remove();
  };
  panel.scrollIntoView({ block: 'nearest' });
  copy.focus();
}

export function dismissSecret() {
  if (secretTeardown) {
    const teardown = secretTeardown;
    secretTeardown = null;
    teardown();
  }
}
