// The dashboard's entry point: session, layout, hash routing.

import { ApiError, get, onUnauthorized, post, setCsrfToken } from './api.js';
import { clear, errorBox, field, h, loading, setAlert, tickTimes } from './ui.js';
import { overviewPage } from './views/overview.js';
import { destinationsPage, destinationFormPage, sourcesPage, sourceFormPage } from './views/resources.js';
import { planFormPage, planPage } from './views/plans.js';
import { runPage, runsPage } from './views/runs.js';
import { snapshotPage } from './views/snapshots.js';
import { migrationsPage } from './views/migrations.js';
import { alertsPage } from './views/alerts.js';
import { settingsPage } from './views/settings.js';

const main = document.getElementById('main');
const topbar = document.getElementById('topbar');
const navToggle = document.getElementById('nav-toggle');
const nav = document.getElementById('primary-nav');

export const session = { me: null };

const ROUTES = [
  [/^\/$/, overviewPage, 'overview'],
  [/^\/destinations$/, destinationsPage, 'destinations'],
  [/^\/destinations\/new$/, destinationFormPage, 'destinations'],
  [/^\/destinations\/([^/]+)\/edit$/, destinationFormPage, 'destinations'],
  [/^\/sources$/, sourcesPage, 'sources'],
  [/^\/sources\/new$/, sourceFormPage, 'sources'],
  [/^\/sources\/([^/]+)\/edit$/, sourceFormPage, 'sources'],
  [/^\/plans$/, overviewPage, 'overview'],
  [/^\/plans\/new$/, planFormPage, 'overview'],
  [/^\/plans\/([^/]+)\/edit$/, planFormPage, 'overview'],
  [/^\/plans\/([^/]+)\/snapshots\/([^/]+)$/, snapshotPage, 'overview'],
  [/^\/plans\/([^/]+)$/, planPage, 'overview'],
  [/^\/runs$/, runsPage, 'runs'],
  [/^\/runs\/([^/]+)$/, runPage, 'runs'],
  [/^\/migrations$/, migrationsPage, 'migrations'],
  [/^\/alerts$/, alertsPage, 'alerts'],
  [/^\/settings$/, settingsPage, 'settings'],
];

function focusKey(el) {
  return el.getAttribute('data-key')
    || `${el.tagName}|${el.getAttribute('href') || ''}|${el.getAttribute('name') || ''}|${el.textContent.trim()}`;
}

let generation = 0;
let leaving = [];
let firstRoute = true;

function parseHash() {
  let hash = window.location.hash.replace(/^#/, '');
  if (!hash.startsWith('/')) hash = `/${hash}`;
  const at = hash.indexOf('?');
  const path = at >= 0 ? hash.slice(0, at) : hash;
  const query = new URLSearchParams(at >= 0 ? hash.slice(at + 1) : '');
  return { path: path.length > 1 ? path.replace(/\/+$/, '') : path, query };
}

export function navigate(hash) {
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

function makeContext(gen, query) {
  const ctx = {
    main,
    query,
    me: session.me,
    alive: () => gen === generation,
    onLeave: (fn) => leaving.push(fn),
    /** Replace the page's content, keeping focus on the same keyed control on refreshes. */
    render: (...nodes) => {
      if (gen !== generation) return;
      const active = document.activeElement;
      const key = active && active !== main && main.contains(active) ? focusKey(active) : null;
      clear(main, ...nodes);
      // A refresh: put focus back on the same control in the new content.
      const again = key && [...main.querySelectorAll('a, button, input, select, textarea')].find((el) => focusKey(el) === key);
      if (again) {
        again.focus({ preventScroll: true });
      } else if (ctx.focusTitle) {
        ctx.focusTitle = false;
        const title = main.querySelector('[data-page-title]');
        if (title) title.focus({ preventScroll: true });
      }
      const title = main.querySelector('h1');
      document.title = title ? `${title.textContent} · multibackup` : 'multibackup';
    },
    /** Call fn after ms while this page is shown. */
    later: (fn, ms) => {
      const timer = setTimeout(() => { if (gen === generation) fn(); }, ms);
      leaving.push(() => clearTimeout(timer));
    },
    focusTitle: !firstRoute,
  };
  return ctx;
}

async function route() {
  if (!session.me) return;
  generation += 1;
  const gen = generation;
  for (const fn of leaving) {
    try { fn(); } catch { /* ignore */ }
  }
  leaving = [];
  setNavOpen(false);
  const { path, query } = parseHash();
  const ctx = makeContext(gen, query);
  firstRoute = false;
  let matched = null;
  for (const [re, view, section] of ROUTES) {
    const m = path.match(re);
    if (m) {
      matched = [view, section, m.slice(1).map(decodeURIComponent)];
      break;
    }
  }
  for (const a of nav.querySelectorAll('a[data-nav]')) {
    if (matched && a.dataset.nav === matched[1]) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!matched) {
    ctx.render(h('div', { class: 'page-header' }, h('h1', { tabindex: '-1', 'data-page-title': '' }, 'Page not found')),
      h('p', null, 'There is no page at this address. ', h('a', { href: '#/' }, 'Go to the overview.')));
    return;
  }
  clear(main, loading());
  const [view, , params] = matched;
  try {
    await view(ctx, ...params);
  } catch (err) {
    if (!ctx.alive()) return;
    if (err instanceof ApiError && err.status === 401) return; // the sign-in page is shown
    if (!(err instanceof ApiError)) console.error(err);
    ctx.render(h('div', { class: 'page-header' }, h('h1', { tabindex: '-1', 'data-page-title': '' },
      err instanceof ApiError && err.status === 404 ? 'Not found' : 'Could not load this page')),
    errorBox(err, { testid: 'page-error' }),
    h('p', null, h('a', { href: '#/' }, 'Back to the overview')));
  }
}

function setNavOpen(open) {
  navToggle.setAttribute('aria-expanded', String(open));
  nav.classList.toggle('open', open);
}

navToggle.addEventListener('click', () => {
  setNavOpen(navToggle.getAttribute('aria-expanded') !== 'true');
});

document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && nav.classList.contains('open')) {
    setNavOpen(false);
    navToggle.focus();
  }
});

// The skip link must not change the hash (that is the router's).
document.querySelector('[data-skip]').addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});

function showApp(me) {
  session.me = me;
  setCsrfToken(me.csrf_token);
  topbar.hidden = false;
  const who = document.getElementById('whoami');
  const org = me.organisation && me.organisation.name ? ` · ${me.organisation.name}` : '';
  who.textContent = `${me.email}${org}`;
}

export function signedOut(message) {
  session.me = null;
  setCsrfToken(null);
  generation += 1;
  for (const fn of leaving) {
    try { fn(); } catch { /* ignore */ }
  }
  leaving = [];
  topbar.hidden = true;
  loginPage(message);
}

function loginPage(message) {
  document.title = 'Sign in · multibackup';
  const region = h('div', { class: 'form-alert', role: 'alert', 'aria-live': 'assertive', testid: 'login-error' });
  const form = h('form', { class: 'login-form', testid: 'login-form', novalidate: true },
    region,
    field({ label: 'Email', name: 'email', type: 'email', autocomplete: 'username', required: true, testid: 'login-email' }),
    field({ label: 'Password', name: 'password', type: 'password', autocomplete: 'current-password', required: true, testid: 'login-password' }),
    h('button', { type: 'submit', class: 'btn btn-primary btn-block', testid: 'login-submit' }, 'Sign in'));
  if (message) setAlert(region, 'info', message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const email = form.elements.email.value.trim();
    const password = form.elements.password.value;
    if (!email || !password) {
      setAlert(region, 'error', 'Enter your email and password.');
      (email ? form.elements.password : form.elements.email).focus();
      return;
    }
    const btn = form.querySelector('button[type=submit]');
    btn.disabled = true;
    btn.setAttribute('aria-busy', 'true');
    setAlert(region, 'error');
    try {
      const res = await post('/auth/login', { email, password });
      const me = res.user ? { ...res.user, csrf_token: res.csrf_token } : res;
      if (!me.organisation || !me.email) {
        try {
          Object.assign(me, await get('/auth/me'));
        } catch { /* the login answer is enough */ }
      }
      me.csrf_token = res.csrf_token || me.csrf_token;
      showApp(me);
      firstRoute = true;
      route();
    } catch (err) {
      setAlert(region, 'error', err.detail || 'Sign-in failed.');
      form.elements.password.select();
      form.elements.password.focus();
    } finally {
      btn.disabled = false;
      btn.removeAttribute('aria-busy');
    }
  });
  clear(main,
    h('div', { class: 'login' },
      h('div', { class: 'login-card card' },
        h('div', { class: 'login-brand' }, h('img', { src: '/static/favicon.svg', alt: '', width: 40, height: 40 }),
          h('h1', null, 'Sign in to multibackup')),
        form)));
  form.elements.email.focus();
}

async function boot() {
  onUnauthorized(() => {
    if (session.me) signedOut('Your session has ended. Please sign in again.');
  });
  window.addEventListener('hashchange', route);
  setInterval(tickTimes, 30000);
  try {
    const me = await get('/auth/me');
    showApp(me);
    route();
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      loginPage();
    } else {
      clear(main, h('div', { class: 'login' }, h('div', { class: 'card login-card' },
        h('h1', null, 'multibackup'),
        errorBox(err, { testid: 'page-error' }),
        h('button', { type: 'button', class: 'btn', onclick: () => window.location.reload() }, 'Try again'))));
    }
  }
}

export function logout() {
  return post('/auth/logout').finally(() => signedOut('You have signed out.'));
}

boot();
