// Small line charts drawn as inline SVG (no library): one series over time.

import { parseTime } from './ui.js';

const NS = 'http://www.w3.org/2000/svg';

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const exp = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) {
    if (m * exp >= value) return m * exp;
  }
  return 10 * exp;
}

function shortDate(d) {
  return d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' })
    + ' ' + d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

/**
 * points: [{time: ISO, value: number, label?: string}] oldest first.
 * format: value → text for the axis and tooltips. Returns an <svg> (or a note if empty).
 */
export function lineChart({ title, points, format, testid, tone = 'primary' }) {
  const data = points
    .map((p) => ({ ...p, date: parseTime(p.time) }))
    .filter((p) => p.date && p.value !== null && p.value !== undefined && !Number.isNaN(Number(p.value)));
  const W = 600;
  const H = 220;
  const pad = { top: 16, right: 16, bottom: 36, left: 76 };
  const iw = W - pad.left - pad.right;
  const ih = H - pad.top - pad.bottom;

  const summary = data.length
    ? `${title}: ${data.length} runs, from ${format(data[0].value)} to ${format(data[data.length - 1].value)}, highest ${format(Math.max(...data.map((p) => Number(p.value))))}.`
    : `${title}: no runs yet.`;
  const svg = s('svg', {
    viewBox: `0 0 ${W} ${H}`, class: `chart chart-${tone}`, role: 'img', 'aria-label': summary,
    'data-testid': testid, preserveAspectRatio: 'xMidYMid meet',
  }, s('title', {}, summary));

  if (!data.length) {
    svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'No runs yet'));
    return svg;
  }

  const t0 = data[0].date.getTime();
  const t1 = data[data.length - 1].date.getTime();
  const span = Math.max(t1 - t0, 1);
  const maxV = niceMax(Math.max(...data.map((p) => Number(p.value))));
  const x = (d) => pad.left + (data.length === 1 ? iw / 2 : ((d.getTime() - t0) / span) * iw);
  const y = (v) => pad.top + ih - (Number(v) / maxV) * ih;

  // Grid and axis labels: 0, ¼, ½, ¾, max.
  const grid = s('g', { class: 'chart-grid' });
  for (let i = 0; i <= 4; i += 1) {
    const v = (maxV * i) / 4;
    const yy = y(v);
    grid.append(
      s('line', { x1: pad.left, x2: W - pad.right, y1: yy, y2: yy }),
      s('text', { x: pad.left - 8, y: yy + 4, 'text-anchor': 'end', class: 'chart-label' }, format(v)),
    );
  }
  svg.append(grid);
  const xLabels = s('g', { class: 'chart-label' });
  xLabels.append(s('text', { x: x(data[0].date), y: H - 12, 'text-anchor': data.length === 1 ? 'middle' : 'start' }, shortDate(data[0].date)));
  if (data.length > 1) {
    xLabels.append(s('text', { x: x(data[data.length - 1].date), y: H - 12, 'text-anchor': 'end' }, shortDate(data[data.length - 1].date)));
  }
  svg.append(xLabels);

  const coords = data.map((p) => [x(p.date), y(p.value)]);
  if (coords.length > 1) {
    const line = coords.map(([a, b], i) => `${i ? 'L' : 'M'}${a.toFixed(1)},${b.toFixed(1)}`).join(' ');
    const area = `${line} L${coords[coords.length - 1][0].toFixed(1)},${(pad.top + ih).toFixed(1)} L${coords[0][0].toFixed(1)},${(pad.top + ih).toFixed(1)} Z`;
    svg.append(s('path', { d: area, class: 'chart-area' }), s('path', { d: line, class: 'chart-line' }));
  }
  const dots = s('g', { class: 'chart-dots' });
  data.forEach((p, i) => {
    const status = p.status ? ` (${p.status})` : '';
    dots.append(s('circle', { cx: coords[i][0], cy: coords[i][1], r: 4, class: p.status && p.status !== 'ok' ? `dot-${p.status}` : null },
      s('title', {}, `${p.date.toLocaleString()}: ${format(p.value)}${status}`)));
  });
  svg.append(dots);
  return svg;
}
