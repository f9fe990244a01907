// #/plans/ID/snapshots/SID?path=/a/b — browse a snapshot, download files, restore a selection.

import { API, get, post } from '../api.js';
import { navigate, session } from '../app.js';
import {
  alertRegion, clear, empty, field, formatBytes, h, onSubmit, pageHeader, submitButton, timeEl,
} from '../ui.js';
import { enc } from './common.js';

// What is ticked for restore, per snapshot, kept while browsing folders.
const selections = new Map();

const SVG = 'http://www.w3.org/2000/svg';
const ICONS = {
  dir: 'M2 5.5A1.5 1.5 0 0 1 3.5 4h3.6l1.6 1.8h7.8A1.5 1.5 0 0 1 18 7.3v7.2a1.5 1.5 0 0 1-1.5 1.5h-13A1.5 1.5 0 0 1 2 14.5z',
  file: 'M5 2.5h6.5L15.5 6.5v11h-10.5zM11.5 2.5v4h4',
  symlink: 'M4 14c0-4 3-6.5 8-6.5V4.5l5 4.5-5 4.5v-3c-3.5 0-6.2 1-8 3.5z',
};

function entryIcon(type) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 20 20');
  svg.setAttribute('width', '18');
  svg.setAttribute('height', '18');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', `entry-icon entry-${type}`);
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', ICONS[type] || ICONS.file);
  svg.append(path);
  return svg;
}

function parentOf(path) {
  const trimmed = path.replace(/\/+$/, '');
  const at = trimmed.lastIndexOf('/');
  return at <= 0 ? '/' : trimmed.slice(0, at);
}

function joinPath(dir, name) {
  return `${dir.replace(/\/+$/, '')}/${name}`;
}

/** Where to open a snapshot: its one backed-up folder, else the root. */
async function startPath(planId, sid) {
  try {
    const snaps = await get(`/plans/${enc(planId)}/snapshots`);
    const snap = snaps.find((s) => s.id === sid || s.short_id === sid || String(s.id).startsWith(sid));
    if (snap && snap.paths && snap.paths.length === 1 && snap.paths[0].startsWith('/')) return snap.paths[0];
  } catch {
    /* the root always works */
  }
  return '/';
}

export async function snapshotPage(ctx, planId, sid) {
  let path = ctx.query.get('path');
  const chosen = !path;
  const planLoad = get(`/plans/${enc(planId)}`);
  planLoad.catch(() => {}); // awaited below
  if (chosen) {
    path = await startPath(planId, sid);
    if (!ctx.alive()) return;
  }
  const tree = (p) => get(`/plans/${enc(planId)}/snapshots/${enc(sid)}/tree?path=${enc(p)}`);
  const plan = await planLoad;
  let entries;
  try {
    entries = await tree(path);
  } catch (err) {
    if (!chosen || path === '/' || err.status !== 422) throw err;
    path = parentOf(path); // a snapshot of one file: show its folder
    entries = await tree(path);
  }
  if (chosen && ctx.alive()) {
    // Keep the address bookmarkable without a second route change.
    window.history.replaceState(null, '', `#/plans/${enc(planId)}/snapshots/${enc(sid)}?path=${enc(path)}`);
  }
  if (!ctx.alive()) return;
  const key = `${planId}/${sid}`;
  if (!selections.has(key)) selections.set(key, new Set());
  const selected = selections.get(key);
  const here = (p) => `#/plans/${enc(planId)}/snapshots/${enc(sid)}?path=${enc(p)}`;

  // Breadcrumbs: snapshot root / a / b
  const parts = path.split('/').filter(Boolean);
  const crumbs = [h('li', null, parts.length ? h('a', { href: here('/') }, 'Snapshot root') : h('span', { 'aria-current': 'page' }, 'Snapshot root'))];
  parts.forEach((part, i) => {
    const p = `/${parts.slice(0, i + 1).join('/')}`;
    crumbs.push(h('li', null, i === parts.length - 1
      ? h('span', { 'aria-current': 'page' }, part)
      : h('a', { href: here(p) }, part)));
  });

  const selectionBox = h('div', { testid: 'restore-selection', 'aria-live': 'polite' });
  const renderSelection = () => {
    const items = [...selected].sort();
    clear(selectionBox, items.length
      ? [h('p', null, `${items.length} selected:`),
        h('ul', { class: 'plain selection' }, items.map((p) => h('li', { class: 'mono wrap' }, p,
          h('button', { type: 'button', class: 'btn btn-link btn-small', 'aria-label': `Remove ${p} from the selection`,
            onclick: () => {
              selected.delete(p);
              const box = table.querySelector(`input[data-path="${CSS.escape(p)}"]`);
              if (box) box.checked = false;
              renderSelection();
            } }, 'remove')))),
        h('button', { type: 'button', class: 'btn btn-small', onclick: () => {
          selected.clear();
          for (const box of table.querySelectorAll('input[data-path]')) box.checked = false;
          renderSelection();
        } }, 'Clear selection')]
      : h('p', { class: 'muted' }, 'Nothing selected: the whole snapshot is restored. Tick files or folders to restore only those.'));
  };

  const sorted = [...entries].sort((a, b) => (a.type === 'dir') === (b.type === 'dir')
    ? a.name.localeCompare(b.name) : a.type === 'dir' ? -1 : 1);
  const rows = sorted.map((e) => {
    const p = e.path || joinPath(path, e.name);
    const boxId = `sel-${Math.random().toString(36).slice(2, 10)}`;
    const box = h('input', { type: 'checkbox', id: boxId, 'data-path': p, checked: selected.has(p), testid: 'entry-select' });
    box.addEventListener('change', () => {
      if (box.checked) selected.add(p);
      else selected.delete(p);
      renderSelection();
    });
    const isDir = e.type === 'dir';
    const icon = entryIcon(e.type);
    const name = isDir
      ? h('a', { href: here(p), testid: 'entry-open' }, icon, e.name, '/')
      : h('span', null, icon, e.name);
    return h('tr', { testid: 'snapshot-entry', 'data-path': p, 'data-type': e.type, 'data-name': e.name },
      h('td', { class: 'select' }, box, h('label', { for: boxId, class: 'sr-only' }, `Select ${e.name} for restore`)),
      h('th', { scope: 'row', class: 'wrap' }, name),
      h('td', { class: 'num' }, isDir ? '—' : formatBytes(e.size)),
      h('td', null, timeEl(e.mtime)),
      h('td', null, e.type === 'file'
        ? h('a', { href: `${API}/plans/${enc(planId)}/snapshots/${enc(sid)}/download?path=${enc(p)}`, download: e.name, testid: 'download-link', 'aria-label': `Download ${e.name}` }, 'Download')
        : ''));
  });
  const table = h('table', { testid: 'snapshot-tree' },
    h('thead', null, h('tr', null, [h('span', { class: 'sr-only' }, 'Select'), 'Name', 'Size', 'Modified', h('span', { class: 'sr-only' }, 'Download')]
      .map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', null,
      path !== '/' ? h('tr', null, h('td'), h('td', { colspan: 4 }, h('a', { href: here(parentOf(path)), testid: 'entry-up' }, '↑ Up one folder'))) : null,
      rows));

  // Restore form
  const restoreRoot = session.me && session.me.server_folder;
  const region = alertRegion('restore-alert');
  const form = h('form', { class: 'form', testid: 'restore-form', novalidate: true },
    region,
    selectionBox,
    field({ label: 'Restore to (a folder on the server)', name: 'target', required: true, testid: 'restore-target',
      placeholder: restoreRoot ? `${restoreRoot}/restored` : '/srv/restore',
      hint: restoreRoot
        ? `A folder below ${restoreRoot}, or the name of a saved source (restored onto that host, bucket or database). Files keep their paths below it.`
        : 'An absolute path on the server, or the name of a saved source (restored onto that host, bucket or database). Files keep their paths below it.' }),
    field({ label: 'Overwrite files that already exist there', name: 'overwrite', type: 'checkbox', testid: 'restore-overwrite' }),
    h('div', { class: 'form-actions' }, submitButton('Restore', { testid: 'restore-button' })));
  onSubmit(form, region, async () => {
    const body = { target: form.elements.target.value.trim(), overwrite: form.elements.overwrite.checked };
    if (selected.size) body.paths = [...selected].sort();
    const run = await post(`/plans/${enc(planId)}/snapshots/${enc(sid)}/restore`, body);
    navigate(`#/runs/${enc(run.id)}`);
  });
  renderSelection();

  const shortId = String(sid).slice(0, 8);
  ctx.render(
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Overview'), ' / ', h('a', { href: `#/plans/${enc(planId)}` }, plan.name), ' / snapshot'),
    pageHeader(`Snapshot ${shortId}`),
    h('nav', { 'aria-label': 'Folder', class: 'breadcrumbs' }, h('ol', { testid: 'breadcrumbs' }, crumbs)),
    h('div', { class: 'browser' },
      h('section', { class: 'card', 'aria-label': 'Files' },
        entries.length ? h('div', { class: 'table-wrap' }, table) : [table, empty('This folder is empty.')]),
      h('section', { class: 'card', 'aria-labelledby': 'restore-title' }, h('h2', { id: 'restore-title' }, 'Restore'), form)),
  );
}

