// Times and counts as the page writes them (the admin's own time zone).

import { h } from './dom.js';

export const pad = (n) => String(n).padStart(2, '0');

export function formatTime(iso) {
  if (!iso) return null;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + pad(d.getHours()) + ':' + pad(d.getMinutes());
}

export function relative(iso) {
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

export function formatDate(iso) {
  const full = formatTime(iso);
  return full ? full.slice(0, 10) : full;
}

/**
 * A `<time>` with the full timestamp as its title, or `empty` as text. `how`: false
 * for the date, true for "3 h ago", 'full' for date and time.
 */
export function timeText(iso, empty, how) {
  if (!iso) return h('span', { className: 'muted', text: empty });
  const text = how === 'full' ? formatTime(iso) : how ? relative(iso) : formatDate(iso);
  return h('time', { datetime: iso, title: formatTime(iso) + ' (' + iso + ')', text });
}

export function timeCell(iso, empty, rel) {
  return h('td', {}, timeText(iso, empty, rel));
}

export function formatCount(n) {
  if (n >= 1e6) return (n / 1e6).toFixed(n % 1e6 ? 1 : 0) + 'M';
  if (n >= 1e3) return (n / 1e3).toFixed(n % 1e3 ? 1 : 0) + 'k';
  return String(Math.round(n));
}

export const WINDOW_NAMES = {
  per_second: 'per second',
  per_minute: 'per minute',
  per_hour: 'per hour',
  per_day: 'per day',
  per_month: 'per month',
};
