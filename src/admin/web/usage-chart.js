// A key's usage report (GET …/keys/{id}/usage) drawn as a bar chart, totals and the
// top routes and resources. Pure rendering: the caller fetches.

import { h, s } from './dom.js';
import { formatCount, formatTime, pad } from './format.js';

export const RANGES = {
  '24h': { hours: 24, granularity: 'hour' },
  '7d': { hours: 24 * 7, granularity: 'day' },
  '30d': { hours: 24 * 30, granularity: 'day' },
  '90d': { hours: 24 * 90, granularity: 'day' },
};

/** The usage query of a range name ending now: `{from, to, granularity}`. */
export function rangeQuery(name) {
  const range = RANGES[name] || RANGES['24h'];
  const to = new Date();
  const from = new Date(to.getTime() - range.hours * 3600 * 1000);
  const iso = (d) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');
  return { from: iso(from), to: iso(to), granularity: range.granularity };
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

export function renderUsage(body, report, granularity) {
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
  return h('table', { className: 'small-table' },
    h('caption', { text: title }),
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', text: c.replace(/_/g, ' ') })))),
    h('tbody', {}, items.slice(0, 20).map((item) => h('tr', {}, columns.map((c) => {
      const v = item && typeof item === 'object' ? item[c] : item;
      return h('td', { text: v === undefined || v === null ? '—' : typeof v === 'object' ? JSON.stringify(v) : String(v) });
    })))));
}
