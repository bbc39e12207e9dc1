// coapgw dashboard: vanilla ES module, no build step. Talks to /api/* of the same origin.
// Live updates come from /api/events (Server-Sent Events); when the stream is down the views
// poll every 2 s instead.
// On loopback the API answers reads without a token. Off loopback its first 401 shows a form that
// asks for the token once and posts it to /api/login, which sets an HttpOnly session cookie; the
// requests that got 401 are then sent again, and the event stream reconnects with the cookie.

const PAGE_SIZE = 50;
const POLL_MS = 2000;
const STATUS_MS = 2000;
const REFRESH_MIN_MS = 1000; // at most one refresh of a view per second on events
const SPARK_POINTS = 60;

// ---------- small helpers ----------

const $ = (sel, root = document) => root.querySelector(sel);

// h builds an element: h('td', {class: 'x', onclick: fn}, 'text', child, ...).
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const nf = new Intl.NumberFormat();
const nf1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const fmtInt = (n) => nf.format(Math.round(n || 0));

function fmtRate(n) {
  if (!n) return '0';
  if (n < 10) return nf1.format(n);
  return fmtInt(n);
}

function fmtBytes(n) {
  if (!n) return '0 B';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${i ? nf1.format(n) : n} ${u[i]}`;
}

function fmtDuration(s) {
  if (s == null || isNaN(s)) return '–';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${nf1.format(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function fmtValue(v) {
  if (typeof v === 'number') {
    if (Number.isInteger(v)) return nf.format(v);
    return new Intl.NumberFormat(undefined, { maximumFractionDigits: 4 }).format(v);
  }
  if (typeof v === 'string') return v;
  return JSON.stringify(v);
}

// The server's clock, so that "3 s ago" is right even when this machine's clock is off.
let clockSkew = 0;
const serverNow = () => Date.now() + clockSkew;

function ago(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((serverNow() - ms) / 1000));
  if (s === 0) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

// freshness classes a last-seen time against the device's own reporting interval (every, in
// seconds; 0 when unknown): fresh within two intervals, recent within ten, old after. A minute and
// an hour are the floors, so a chatty device is not orange after a second of silence.
function freshness(ms, every) {
  const s = (serverNow() - ms) / 1000;
  const i = every > 0 ? every : 30;
  if (s < Math.max(60, 2 * i + 5)) return 'fresh';
  if (s < Math.max(3600, 10 * i)) return 'recent';
  return 'old';
}

// median of the numbers in xs (unsorted), 0 for none.
function median(xs) {
  if (!xs.length) return 0;
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2;
}

// thingInterval is a thing's mean reporting interval in seconds from its first and last seen
// times and its message count; 0 when it reported fewer than twice.
function thingInterval(t) {
  const span = (Date.parse(t.lastSeen) - Date.parse(t.firstSeen)) / 1000;
  return t.messages > 1 && span > 0 ? span / (t.messages - 1) : 0;
}

const fullTime = (ms) => (ms ? new Date(ms).toLocaleString() : '');

// relTime renders a self-updating "N s ago"; with a dot when every (the device's reporting
// interval in seconds, see freshness) is given.
function relTime(ms, every) {
  const text = h('span', { class: 'rel', 'data-ts': ms, title: fullTime(ms) }, ago(ms));
  if (every == null) return text;
  const title = every > 0 ? `reports about every ${fmtDuration(every)}` : null;
  return h('span', { class: 'seen' }, h('i', { class: `dot ${freshness(ms, every)}`, 'data-dot': ms, 'data-every': every, title }), text);
}

function tickRelTimes() {
  for (const el of document.querySelectorAll('[data-ts]')) {
    const t = Number(el.dataset.ts);
    const s = ago(t);
    if (el.textContent !== s) el.textContent = s;
  }
  for (const el of document.querySelectorAll('[data-dot]')) {
    el.className = `dot ${freshness(Number(el.dataset.dot), Number(el.dataset.every))}`;
  }
}

// ---------- API ----------

class HTTPError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// api fetches path (GET, or init.method with init.body, JSON) and returns the JSON answer.
async function api(path, signal, init = {}) {
  let res;
  for (;;) {
    if (auth.pending) await auth.pending;
    try {
      const headers = { Accept: 'application/json' };
      if (init.body != null) headers['Content-Type'] = 'application/json';
      res = await fetch(path, { signal, method: init.method || 'GET', body: init.body, headers });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      setOffline(true);
      throw new HTTPError(0, 'gateway unreachable');
    }
    setOffline(false);
    if (res.status !== 401) break;
    await login();
    if (signal && signal.aborted) throw new DOMException('aborted', 'AbortError');
  }
  let body = null;
  try {
    body = await res.json();
  } catch (e) {
    if (e.name === 'AbortError') throw e;
  }
  if (!res.ok) throw new HTTPError(res.status, (body && body.error) || res.statusText);
  if (body === null) throw new HTTPError(res.status, 'the gateway sent an answer that is not JSON');
  return body;
}

// ---------- login ----------

const auth = { pending: null };

// login shows the token form (once, however many requests got 401) and resolves when the gateway
// accepted the token.
function login() {
  if (auth.pending) return auth.pending;
  auth.pending = new Promise((resolve) => {
    const box = $('#login'), form = $('#login-form'), input = $('#login-token'), msg = $('#login-error'), btn = $('#login-submit');
    msg.textContent = '';
    box.hidden = false;
    input.focus();
    const submit = async (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (!token) { msg.textContent = 'Enter the token.'; return; }
      btn.disabled = true;
      let res = null;
      try {
        res = await fetch('api/login', {
          method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token }),
        });
      } catch { /* below */ }
      btn.disabled = false;
      if (res && res.ok) {
        form.removeEventListener('submit', submit);
        input.value = '';
        box.hidden = true;
        auth.pending = null;
        resolve();
        // The stream was refused without the session; open it now rather than in 15 s.
        if (!conn.es) { clearTimeout(conn.retryTimer); connectEvents(); }
        return;
      }
      let text = 'The gateway does not answer.';
      if (res) {
        text = res.status === 401 ? 'Wrong token.' : `The gateway refused: ${res.status}`;
        try { const b = await res.json(); if (res.status !== 401 && b.error) text = b.error; } catch { /* keep text */ }
      }
      msg.textContent = text;
      input.select();
    };
    form.addEventListener('submit', submit);
  });
  return auth.pending;
}

const qs = (o) => {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(o)) if (v !== '' && v != null) p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : '';
};

// ---------- connection state, live events ----------

const conn = { es: null, started: false, live: false, offline: false, listeners: new Set(), pollTimer: 0, retryTimer: 0 };

function renderConn() {
  const el = $('#conn');
  const state = conn.offline ? 'offline' : conn.live ? 'live' : conn.started ? 'polling' : 'connecting';
  el.dataset.state = state;
  el.title = {
    connecting: 'Connecting to the live stream…',
    live: 'Live: updates are pushed by the gateway',
    polling: 'Polling every 2 s (live stream unavailable)',
    offline: 'The gateway does not answer; retrying',
  }[state];
  el.querySelector('span').textContent = state;
  const banner = $('#banner');
  banner.hidden = !conn.offline;
  banner.textContent = conn.offline ? 'The gateway does not answer. Retrying…' : '';
}

function setOffline(off) {
  if (conn.offline === off) return;
  conn.offline = off;
  renderConn();
}

// onChange registers fn(names|null) for thing changes; null means "reload everything".
function onChange(fn) {
  conn.listeners.add(fn);
  return () => conn.listeners.delete(fn);
}

function emit(names) {
  for (const fn of conn.listeners) fn(names);
}

function setLive(live) {
  if (conn.live === live && conn.started) return;
  conn.started = true;
  conn.live = live;
  renderConn();
  if (live) {
    clearInterval(conn.pollTimer);
    conn.pollTimer = 0;
  } else if (!conn.pollTimer) {
    conn.pollTimer = setInterval(() => emit(null), POLL_MS);
  }
}

function connectEvents() {
  if (!('EventSource' in window)) { setLive(false); return; }
  const es = new EventSource('api/events');
  conn.es = es;
  let wasOpen = false;
  es.addEventListener('open', () => {
    setLive(true);
    // Something may have changed while the stream was down.
    if (wasOpen) emit(null);
    wasOpen = true;
  });
  es.addEventListener('thing', (ev) => {
    let names = null;
    try { names = JSON.parse(ev.data).names; } catch { /* resync below */ }
    emit(Array.isArray(names) ? names : null);
  });
  es.addEventListener('resync', () => emit(null));
  es.addEventListener('error', () => {
    setLive(false);
    if (es.readyState === EventSource.CLOSED) {
      // The server refused the stream (e.g. too many clients or shutting down): poll, and try
      // the stream again later.
      conn.es = null;
      conn.retryTimer = setTimeout(connectEvents, 15000);
    }
  });
}

// throttled returns a function that runs fn at most once per REFRESH_MIN_MS, trailing.
function throttled(fn) {
  let last = 0, timer = 0, running = false, again = false, stopped = false;
  const run = async () => {
    timer = 0;
    if (stopped) return;
    if (running) { again = true; return; }
    running = true;
    last = Date.now();
    try { await fn(); } finally {
      running = false;
      if (again) { again = false; schedule(); }
    }
  };
  const schedule = () => {
    if (timer || stopped) return;
    timer = setTimeout(run, Math.max(0, last + REFRESH_MIN_MS - Date.now()));
  };
  schedule.cancel = () => { stopped = true; clearTimeout(timer); timer = 0; };
  return schedule;
}

// ---------- status panel ----------

const spark = [];

function setStat(id, text) {
  const el = document.getElementById(id);
  if (el.textContent !== text) el.textContent = text;
}

function renderSpark() {
  const svg = $('#st-spark');
  if (spark.length < 2) return;
  // Spread the samples we have over the width; scale to their range, padded so that noise on a
  // steady rate stays small.
  const hi = Math.max(...spark), lo = Math.min(...spark);
  const pad = Math.max((hi - lo) * 0.6, hi * 0.1, 1);
  const top = hi + pad * 0.3, bottom = Math.max(0, lo - pad);
  const step = 120 / (spark.length - 1);
  const y = (v) => (27 - ((v - bottom) / (top - bottom)) * 25).toFixed(1);
  const pts = spark.map((v, i) => `${(i * step).toFixed(1)},${y(v)}`);
  svg.querySelector('.spark-line').setAttribute('d', `M${pts.join('L')}`);
  svg.querySelector('.spark-fill').setAttribute('d', `M0,28L${pts.join('L')}L120,28Z`);
  svg.querySelector('title').textContent = `Last ${fmtDuration(((spark.length - 1) * STATUS_MS) / 1000)}, peak ${fmtRate(Math.max(...spark))} rec/s`;
}

// refreshStatus updates the status panel; a tick (every STATUS_MS) also adds a sparkline sample.
async function refreshStatus(tick) {
  if (auth.pending) return; // one call waits for the login; the others would only pile up
  let s;
  try { s = await api('api/status'); } catch { return; }
  if (s.time) clockSkew = Date.parse(s.time) - Date.now();
  setStat('st-rate', fmtRate(s.acceptedPerSecond));
  if (tick) {
    spark.push(s.acceptedPerSecond || 0);
    if (spark.length > SPARK_POINTS) spark.shift();
    renderSpark();
  }
  setStat('st-spool', fmtInt(s.spoolDepth));
  setStat('st-spool-bytes', s.spoolBytes ? `${fmtBytes(s.spoolBytes)} on disk` : '\u00a0');
  const lag = s.processorLagSeconds || 0;
  setStat('st-lag', fmtDuration(lag));
  $('#st-lag').closest('.stat').classList.toggle('warn', lag >= 5);
  setStat('st-lag-sub', lag < 1 ? 'caught up' : lag < 5 ? 'catching up' : 'behind');
  setStat('st-things', fmtInt(s.things));
  setStat('st-types', `${fmtInt(s.thingTypes)} type${s.thingTypes === 1 ? '' : 's'} · ${fmtInt(s.messages)} message${s.messages === 1 ? '' : 's'}`);
  setStat('st-errors', fmtInt(s.setAside));
  $('#st-errors-card').classList.toggle('bad', s.setAside > 0);
  const badge = $('#tab-errors');
  badge.hidden = !s.setAside;
  badge.textContent = fmtInt(s.setAside);
  setStat('foot-version', `coapgw ${s.version || ''}`.trim());
  setStat('foot-uptime', s.uptimeSeconds ? `up ${fmtDuration(s.uptimeSeconds)}` : '');
}

// ---------- views ----------

// Each view is {el, dispose()}; the router keeps one at a time.
let current = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = raw.split('?');
  return { path, params: new URLSearchParams(query) };
}

function route() {
  if (current) current.dispose();
  const { path, params } = parseHash();
  let m;
  let tab = 'devices';
  if ((m = path.match(/^\/things\/([^/]+)$/))) {
    current = deviceView(decodeURIComponent(m[1]));
  } else if (path === '/errors') {
    tab = 'errors';
    current = errorsView();
  } else {
    current = devicesView(params);
  }
  for (const a of document.querySelectorAll('.tabs a')) a.classList.toggle('active', a.dataset.tab === tab);
  const view = $('#view');
  view.replaceChildren(current.el);
  window.scrollTo(0, 0);
}

function emptyRow(cols, title, text) {
  return h('tr', null, h('td', { colspan: cols }, h('div', { class: 'empty' }, h('strong', null, title), text)));
}

// loadingRow fills a table until its first answer.
function loadingRow(cols) {
  const r = emptyRow(cols, 'Loading…', '');
  r.classList.add('loading');
  return r;
}

function errorRow(cols, err) {
  return emptyRow(cols, 'Could not load', err.message);
}

// --- Devices ---

const searchIcon = () => {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('fill', 'none');
  svg.setAttribute('stroke-width', '1.8');
  const c = document.createElementNS(ns, 'circle');
  c.setAttribute('cx', '7'); c.setAttribute('cy', '7'); c.setAttribute('r', '5');
  const l = document.createElementNS(ns, 'path');
  l.setAttribute('d', 'M11 11l3.5 3.5');
  l.setAttribute('stroke-linecap', 'round');
  svg.append(c, l);
  return svg;
};

// The sorts of the device list (the API's sort parameter), and how many of each device's latest
// values the list shows.
const SORTS = ['lastSeen', 'firstSeen', 'messages', 'name', 'type'];
const defaultOrder = (key) => (key === 'name' || key === 'type' ? 'asc' : 'desc');
const LATEST_VALUES = 3;
const COLS = 6;

// latestValues shows a device's latest reported values: "temp 21.5 °C", one chip each.
function latestValues(latest) {
  if (!latest || !latest.length) return h('span', { class: 'muted' }, '—');
  return latest.map((v) => h('span', { class: 'val', 'data-prop': v.property, title: `${v.property} at ${new Date(v.t).toLocaleString()}` },
    h('span', { class: 'val-name' }, v.property), ' ',
    h('span', { class: 'val-value num' }, fmtValue(v.value) + (v.unit ? ` ${v.unit}` : ''))));
}

function devicesView(params) {
  const state = {
    type: params.get('type') || '',
    prefix: params.get('prefix') || '',
    cursors: [''], // cursor of each page visited; the last is the current page
    ctl: null,
    shown: new Map(), // name -> lastSeen shown, to flash changed rows
    // The order of the list, sorted by the gateway across pages: '' = last seen, newest first.
    sort: SORTS.includes(params.get('sort')) ? params.get('sort') : '',
    order: ['asc', 'desc'].includes(params.get('order')) ? params.get('order') : '',
    page: null,
  };

  const typeSel = h('select', { class: 'field', id: 'f-type', 'aria-label': 'Thing type' },
    h('option', { value: '' }, 'All types'));
  const prefixIn = h('input', {
    class: 'field', id: 'f-prefix', type: 'search', placeholder: 'Name prefix…',
    'aria-label': 'Thing name prefix', autocomplete: 'off', spellcheck: 'false', value: state.prefix,
  });
  const total = h('span', { class: 'muted num', id: 'things-total' });
  const tbody = h('tbody', null, loadingRow(COLS));
  const prev = h('button', { class: 'btn', id: 'pg-prev', disabled: true, 'aria-label': 'Previous page' }, '‹ Prev');
  const next = h('button', { class: 'btn', id: 'pg-next', disabled: true, 'aria-label': 'Next page' }, 'Next ›');
  const range = h('span', { class: 'num', id: 'pg-range' });

  const el = h('div', { class: 'panel' },
    h('div', { class: 'panel-head' },
      h('h2', null, 'Devices'),
      h('div', { class: 'toolbar' }, typeSel, h('label', { class: 'search' }, searchIcon(), prefixIn)),
      total),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'grid', id: 'things' },
        h('thead', null, h('tr', null,
          sortTh('name', 'Device'),
          sortTh('type', 'Type', 'col-type'),
          h('th', { class: 'col-latest' }, 'Latest values'),
          sortTh('lastSeen', 'Last seen'),
          sortTh('messages', 'Messages', 'r col-msgs'),
          sortTh('firstSeen', 'First seen', 'col-first'))),
        tbody)),
    h('div', { class: 'pager' }, range, h('span', { class: 'spacer' }), prev, next));

  // sortTh is a header that sorts the whole list by key, from its first page (again: the other
  // way round). Name and type start ascending, the others newest or most first.
  function sortTh(key, label, cls) {
    return h('th', { class: cls, 'data-sort': key },
      h('button', {
        type: 'button', class: 'sort', title: 'Sort the list',
        onclick: () => {
          const cur = sortKey();
          state.order = cur === key ? (sortOrder() === 'asc' ? 'desc' : 'asc') : defaultOrder(key);
          state.sort = key;
          restart();
        },
      }, label));
  }
  const sortKey = () => state.sort || 'lastSeen';
  const sortOrder = () => state.order || defaultOrder(sortKey());

  const syncHash = () => {
    // The default order stays out of the address.
    const custom = sortKey() !== 'lastSeen' || sortOrder() !== 'desc';
    const q = qs({ type: state.type, prefix: state.prefix, sort: custom ? sortKey() : '', order: custom ? sortOrder() : '' });
    const want = `#/${q}`;
    if (location.hash !== want && !(location.hash === '' && want === '#/')) history.replaceState(null, '', want);
  };

  async function loadTypes() {
    try {
      const { thingTypes } = await api('api/thing-types');
      const keep = state.type;
      typeSel.replaceChildren(h('option', { value: '' }, 'All types'),
        ...thingTypes.map((t) => h('option', { value: t.thingTypeName }, `${t.thingTypeName} (${fmtInt(t.things)})`)));
      if (keep && !thingTypes.some((t) => t.thingTypeName === keep)) {
        typeSel.append(h('option', { value: keep }, keep));
      }
      typeSel.value = keep;
    } catch { /* the list still works without the type names */ }
  }

  function row(t, flash) {
    const seen = Date.parse(t.lastSeen) || 0;
    const href = `#/things/${encodeURIComponent(t.thingName)}`;
    return h('tr', {
      class: flash ? 'click flash' : 'click',
      'data-name': t.thingName,
      onclick: (ev) => { if (!ev.target.closest('a')) location.hash = href; },
    },
    h('td', null,
      h('a', { class: 'thing-name', href }, t.thingName),
      h('div', { class: 'thing-sub' }, t.thingTypeName)),
    h('td', { class: 'col-type' }, h('span', { class: 'chip' }, t.thingTypeName)),
    h('td', { class: 'col-latest' }, latestValues(t.latest)),
    h('td', null, relTime(seen, thingInterval(t))),
    h('td', { class: 'r num col-msgs' }, fmtInt(t.messages)),
    h('td', { class: 'col-first muted' }, relTime(Date.parse(t.firstSeen) || 0)));
  }

  async function load() {
    if (state.ctl) state.ctl.abort();
    const ctl = new AbortController();
    state.ctl = ctl;
    const cursor = state.cursors[state.cursors.length - 1];
    let page;
    try {
      page = await api(`api/things${qs({
        type: state.type, prefix: state.prefix, limit: PAGE_SIZE, cursor,
        sort: state.sort, order: state.order, latest: LATEST_VALUES,
      })}`, ctl.signal);
    } catch (e) {
      if (e.name === 'AbortError') return;
      if (!tbody.children.length || $('.loading', tbody) || e.status) tbody.replaceChildren(errorRow(COLS, e));
      return;
    }
    state.page = page;
    show(page, true);
  }

  // show renders a page of things, in the gateway's order; flash marks rows changed since the last.
  function show(page, flash) {
    const first = !flash || state.shown.size === 0;
    const seenBefore = state.shown;
    state.shown = new Map();
    for (const th of el.querySelectorAll('th[data-sort]')) {
      th.setAttribute('aria-sort', th.dataset.sort !== sortKey() ? 'none' : sortOrder() === 'desc' ? 'descending' : 'ascending');
    }
    const rows = page.things.map((t) => {
      const changed = !first && seenBefore.get(t.thingName) !== t.lastSeen;
      state.shown.set(t.thingName, t.lastSeen);
      return row(t, changed);
    });
    if (rows.length) tbody.replaceChildren(...rows);
    else if (state.type || state.prefix) tbody.replaceChildren(emptyRow(COLS, 'No matching devices', 'Try another type or prefix.'));
    else tbody.replaceChildren(emptyRow(COLS, 'No devices yet', 'Devices appear here as soon as they send telemetry.'));
    const start = (state.cursors.length - 1) * PAGE_SIZE;
    total.textContent = `${fmtInt(page.total)} device${page.total === 1 ? '' : 's'}`;
    range.textContent = page.things.length ? `${fmtInt(start + 1)}–${fmtInt(start + page.things.length)} of ${fmtInt(page.total)}` : '';
    prev.disabled = state.cursors.length <= 1;
    next.disabled = !page.nextToken;
    next.dataset.token = page.nextToken || '';
  }

  const refresh = throttled(load);
  const restart = () => {
    state.cursors = [''];
    state.shown = new Map();
    syncHash();
    load();
  };

  typeSel.addEventListener('change', () => { state.type = typeSel.value; restart(); });
  let debounce = 0;
  prefixIn.addEventListener('input', () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      const v = prefixIn.value.trim();
      if (v && !/^[a-zA-Z0-9:_-]{1,128}$/.test(v)) {
        prefixIn.setCustomValidity('letters, digits, : _ - only');
        prefixIn.reportValidity();
        return;
      }
      prefixIn.setCustomValidity('');
      if (v === state.prefix) return;
      state.prefix = v;
      restart();
    }, 200);
  });
  next.addEventListener('click', () => {
    if (!next.dataset.token) return;
    state.cursors.push(next.dataset.token);
    state.shown = new Map();
    load();
  });
  prev.addEventListener('click', () => {
    if (state.cursors.length <= 1) return;
    state.cursors.pop();
    state.shown = new Map();
    load();
  });

  const off = onChange((names) => {
    if (names === null) loadTypes();
    refresh();
  });
  loadTypes();
  load();

  return {
    el,
    dispose() {
      off();
      refresh.cancel();
      clearTimeout(debounce);
      if (state.ctl) state.ctl.abort();
    },
  };
}

// --- Device ---

// flatten walks reported state and its metadata into [{path, value, ts}], leaves only; arrays are
// one value.
function flatten(reported, meta, prefix = '', out = []) {
  for (const [k, v] of Object.entries(reported || {})) {
    const path = prefix ? `${prefix}.${k}` : k;
    const m = meta ? meta[k] : undefined;
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      flatten(v, m, path, out);
    } else {
      out.push({ path, value: v, ts: metaTime(m) });
    }
  }
  return out;
}

// metaTime is the newest timestamp (epoch seconds) in a metadata subtree, in ms.
function metaTime(m) {
  if (!m || typeof m !== 'object') return 0;
  if (typeof m.timestamp === 'number') return m.timestamp * 1000;
  let best = 0;
  for (const v of Object.values(m)) best = Math.max(best, metaTime(v));
  return best;
}

const RANGES = [['15m', '15 min'], ['1h', '1 h'], ['24h', '24 h'], ['', 'All']];
let chosenRange = '';

// GAP_FACTOR: a pause between two samples longer than this many typical intervals breaks the
// chart's line.
const GAP_FACTOR = 3;

// withGaps turns sorted [[t, v], ...] (t in seconds) into uPlot data, with a null point in every
// pause longer than GAP_FACTOR median intervals, so that the line breaks there instead of drawing
// a straight line across it. It returns the data, the gap count and the median interval.
function withGaps(pts) {
  const every = median(pts.slice(1).map((p, i) => p[0] - pts[i][0]).filter((d) => d > 0));
  const xs = [], ys = [];
  let gaps = 0;
  pts.forEach(([t, v], i) => {
    if (i && every > 0 && t - pts[i - 1][0] > GAP_FACTOR * every) {
      xs.push((t + pts[i - 1][0]) / 2);
      ys.push(null);
      gaps++;
    }
    xs.push(t);
    ys.push(v);
  });
  return { data: [xs, ys], gaps, every };
}

const pad2 = (n) => String(n).padStart(2, '0');

// timeTicks formats the time axis with one format for every tick, chosen by the shown span:
// HH:MM:SS within a day, MM-DD HH:MM beyond (local time, 24 h).
function timeTicks(u, splits) {
  const span = u.scales.x.max - u.scales.x.min;
  return splits.map((t) => {
    const d = new Date(t * 1000);
    const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
    if (span <= 86400) return `${hm}:${pad2(d.getSeconds())}`;
    return `${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${hm}`;
  });
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function deviceView(name) {
  const ctl = new AbortController();
  const charts = new Map(); // property -> {card, u, latest, n}
  const facts = h('div', { class: 'facts' });
  const typeChip = h('span', { class: 'chip' });
  const stateBody = h('tbody', null, loadingRow(3));
  const rawPre = h('pre', { id: 'raw-shadow' });
  const chartsBox = h('div', { class: 'charts', id: 'charts' },
    h('div', { class: 'panel empty loading', id: 'history-loading' }, h('strong', null, 'Loading…'), 'history'));
  const csv = h('a', { class: 'btn', id: 'history-csv', download: '', title: 'The history shown, as CSV' }, 'CSV');
  const setCSV = () => { csv.href = `api/things/${encodeURIComponent(name)}/history.csv${qs({ since: chosenRange })}`; };
  setCSV();
  const seg = h('div', { class: 'seg', role: 'group', 'aria-label': 'Time range' });
  const head = h('div', { class: 'panel device-head' },
    h('div', null, h('h1', { id: 'device-name' }, name), typeChip),
    facts);
  const stateCard = h('div', { class: 'panel', id: 'state' },
    h('div', { class: 'panel-head' }, h('h2', null, 'Reported state'), h('span', { class: 'spacer' }),
      h('span', { class: 'muted', id: 'shadow-version' })),
    h('table', { class: 'grid state-table' }, stateBody),
    h('details', { class: 'raw' }, h('summary', null, 'Shadow document (JSON)'), rawPre));
  // Desired state: an editor (merged into the desired state; null deletes) and the delta, what
  // the device has not reported yet (docs/downlink.md).
  const desiredEdit = h('textarea', { id: 'desired-edit', class: 'desired-edit', rows: 5, spellcheck: 'false',
    'aria-label': 'Desired state (JSON object)', oninput: () => { desiredDirty = true; } });
  const desiredMsg = h('div', { class: 'muted', id: 'desired-error', role: 'status' });
  const deltaBody = h('tbody', { id: 'delta' });
  const deltaStatus = h('span', { class: 'muted', id: 'delta-status' });
  let desiredDirty = false;
  const desiredCard = h('div', { class: 'panel', id: 'desired' },
    h('div', { class: 'panel-head' }, h('h2', null, 'Desired state'), h('span', { class: 'spacer' }), deltaStatus),
    h('table', { class: 'grid state-table' }, deltaBody),
    h('div', { class: 'desired-form' },
      desiredEdit,
      h('div', { class: 'desired-actions' },
        h('button', { type: 'button', id: 'desired-save', onclick: () => saveDesired() }, 'Set desired state'),
        h('span', { class: 'muted' }, 'Merged into the desired state; null deletes a property.')),
      desiredMsg));
  const el = h('div', null,
    h('div', { class: 'crumbs' }, h('a', { href: '#/' }, 'Devices'), ' / ', h('span', { class: 'mono' }, name)),
    head,
    h('div', { class: 'device-grid' },
      h('div', null, stateCard, desiredCard),
      h('div', null,
        h('div', { class: 'charts-head', style: 'margin-bottom:10px' }, h('h2', null, 'History'), h('span', { class: 'spacer' }), seg, csv),
        chartsBox)));

  for (const [v, label] of RANGES) {
    seg.append(h('button', {
      type: 'button', class: v === chosenRange ? 'on' : null, 'data-range': v,
      onclick: () => {
        chosenRange = v;
        setCSV();
        for (const b of seg.children) b.classList.toggle('on', b.dataset.range === v);
        loadHistory();
      },
    }, label));
  }

  function fact(k, v) { return h('div', { class: 'fact' }, h('div', { class: 'k' }, k), h('div', { class: 'v' }, v)); }

  let missing = false;
  let historyEvery = 0; // the median reporting interval in the history shown, seconds
  const units = new Map(); // property -> SenML unit, from the history
  const withUnit = (prop, v) => fmtValue(v) + (typeof v === 'number' && units.get(prop) ? ` ${units.get(prop)}` : '');

  async function loadThing() {
    try {
      // A thing that only sent {} exists but has no shadow (404, as in AWS): the thing's own
      // answer says whether the device is missing.
      const [t, shadow] = await Promise.all([
        api(`api/things/${encodeURIComponent(name)}`, ctl.signal),
        api(`api/things/${encodeURIComponent(name)}/shadow`, ctl.signal)
          .catch((e) => { if (e.status === 404) return { state: {}, metadata: {} }; throw e; }),
      ]);
      missing = false;
      typeChip.textContent = t.thingTypeName;
      facts.replaceChildren(
        fact('Last seen', relTime(Date.parse(t.lastSeen) || 0, historyEvery || thingInterval(t))),
        fact('First seen', relTime(Date.parse(t.firstSeen) || 0)),
        fact('Messages', fmtInt(t.messages)),
        fact('Version', fmtInt(t.version)));
      const reported = (shadow.state && shadow.state.reported) || {};
      const meta = (shadow.metadata && shadow.metadata.reported) || {};
      const props = flatten(reported, meta);
      $('#shadow-version', stateCard).textContent = shadow.version != null ? `version ${fmtInt(shadow.version)}` : '';
      stateBody.replaceChildren(...(props.length ? props.map((p) => h('tr', { 'data-prop': p.path },
        h('td', { class: 'prop' }, p.path),
        h('td', { class: 'value', 'data-v': JSON.stringify(p.value) }, withUnit(p.path, p.value)),
        h('td', { class: 'when' }, p.ts ? relTime(p.ts) : ''))) : [emptyRow(3, 'Nothing reported yet', '')]));
      rawPre.textContent = JSON.stringify(shadow, null, 2);
      showDesired(shadow);
    } catch (e) {
      if (e.name === 'AbortError') return;
      if (e.status === 404) {
        missing = true;
        head.replaceChildren(h('div', { class: 'empty', style: 'flex:1' },
          h('strong', null, `No device named ${name}`),
          'It may not have sent telemetry yet. This page updates when it does.'));
        stateBody.replaceChildren();
      } else if (e.status) {
        stateBody.replaceChildren(errorRow(3, e));
      }
    }
  }

  function showDesired(shadow) {
    const st = shadow.state || {};
    const desired = st.desired || {};
    const delta = flatten(st.delta || {}, (shadow.metadata || {}).desired);
    if (!desiredDirty && document.activeElement !== desiredEdit) {
      desiredEdit.value = JSON.stringify(desired, null, 2);
    }
    deltaStatus.textContent = !st.desired ? 'none set' : delta.length ? `${delta.length} pending` : 'in sync';
    deltaBody.replaceChildren(...delta.map((p) => h('tr', { 'data-prop': p.path },
      h('td', { class: 'prop' }, p.path),
      h('td', { class: 'value' }, fmtValue(p.value)),
      h('td', { class: 'when' }, 'not reported yet'))));
  }

  async function saveDesired() {
    let desired;
    try {
      desired = JSON.parse(desiredEdit.value);
    } catch (e) {
      desiredMsg.textContent = `Not JSON: ${e.message}`;
      return;
    }
    if (desired === null || typeof desired !== 'object' || Array.isArray(desired)) {
      desiredMsg.textContent = 'Desired state must be a JSON object.';
      return;
    }
    try {
      const shadow = await api(`api/things/${encodeURIComponent(name)}/shadow`, ctl.signal,
        { method: 'PUT', body: JSON.stringify({ state: { desired } }) });
      desiredDirty = false;
      desiredMsg.textContent = `Saved: version ${fmtInt(shadow.version)}.`;
      rawPre.textContent = JSON.stringify(shadow, null, 2);
      desiredEdit.blur();
      showDesired(shadow);
    } catch (e) {
      if (e.name === 'AbortError') return;
      desiredMsg.textContent = `Not saved: ${e.message}`;
    }
  }

  function makeChart(prop) {
    const plotEl = h('div', { class: 'chart' });
    const latest = h('span', { class: 'latest' });
    const n = h('span', { class: 'n' });
    const unit = h('span', { class: 'unit' });
    const card = h('div', { class: 'panel chart-card', 'data-prop': prop },
      h('div', { class: 'chart-title' }, h('span', { class: 'prop' }, prop), unit, n, latest), plotEl);
    chartsBox.append(card);
    const accent = cssVar('--accent') || '#2563eb';
    const grid = cssVar('--border') || '#e2e7ee';
    const text = cssVar('--muted') || '#5d6b7c';
    const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, font: '11px system-ui, sans-serif' };
    const width = Math.max(240, plotEl.clientWidth || chartsBox.clientWidth || 600);
    const u = new window.uPlot({
      width,
      height: 200,
      cursor: { drag: { x: true, y: false } },
      legend: { show: false },
      scales: { x: { time: true } },
      axes: [{ ...axis, values: timeTicks, space: 80 }, { ...axis, size: 56 }],
      series: [
        {},
        { label: prop, stroke: accent, width: 2, fill: accent.startsWith('#') ? `${accent}22` : undefined, points: { size: 4 }, spanGaps: false },
      ],
    }, [[], []], plotEl);
    plotEl.uplot = u; // for tests: the data and the tick labels drawn
    const c = { card, u, latest, n, unit, plotEl };
    charts.set(prop, c);
    return c;
  }

  async function loadHistory() {
    let body;
    try {
      body = await api(`api/things/${encodeURIComponent(name)}/history${qs({ since: chosenRange })}`, ctl.signal);
    } catch (e) {
      if (e.name === 'AbortError') return;
      if (e.status === 404) chartsBox.replaceChildren(h('div', { class: 'panel empty' }, 'No history.'));
      else if ($('#history-loading', chartsBox)) chartsBox.replaceChildren(h('div', { class: 'panel empty' }, h('strong', null, 'Could not load'), e.message));
      return;
    }
    const loading = $('#history-loading', chartsBox);
    if (loading) loading.remove();
    const seen = new Set();
    const series = body.series.filter((s) => s.points.length).sort((a, b) => a.property.localeCompare(b.property));
    if (!series.length) {
      for (const c of charts.values()) c.u.destroy();
      charts.clear();
      chartsBox.replaceChildren(h('div', { class: 'panel empty', id: 'no-history' },
        h('strong', null, 'No numeric history'),
        chosenRange ? 'Nothing in this time range.' : 'Numeric properties are charted once the device reports them.'));
      return;
    }
    const placeholder = $('#no-history', chartsBox);
    if (placeholder) placeholder.remove();
    const intervals = [];
    for (const s of series) {
      seen.add(s.property);
      const pts = s.points.map((p) => [Date.parse(p.t) / 1000, p.v]).sort((a, b) => a[0] - b[0]);
      const { data, gaps, every } = withGaps(pts);
      if (every > 0) intervals.push(every);
      const c = charts.get(s.property) || makeChart(s.property);
      c.card.dataset.gaps = gaps;
      c.u.setData(data);
      // SenML readings carry a unit (RFC 8428 "u"): shown next to the name and the value.
      c.unit.textContent = s.unit ? `[${s.unit}]` : '';
      if (s.unit && units.get(s.property) !== s.unit) {
        units.set(s.property, s.unit);
        const cell = $(`tr[data-prop="${CSS.escape(s.property)}"] .value`, stateBody);
        if (cell && cell.dataset.v != null) cell.textContent = withUnit(s.property, JSON.parse(cell.dataset.v));
      }
      c.latest.textContent = fmtValue(pts[pts.length - 1][1]) + (s.unit ? ` ${s.unit}` : '');
      c.n.textContent = `${fmtInt(pts.length)} point${pts.length === 1 ? '' : 's'}`;
    }
    for (const [prop, c] of charts) {
      if (!seen.has(prop)) { c.u.destroy(); c.card.remove(); charts.delete(prop); }
    }
    // The history's median interval is a better measure of the device's rhythm than the mean
    // over its life (thingInterval), which pauses stretch.
    const dot = $('.facts .dot', head);
    if (intervals.length) historyEvery = Math.min(...intervals);
    if (dot && historyEvery) {
      const every = historyEvery;
      dot.dataset.every = every;
      dot.title = `reports about every ${fmtDuration(every)}`;
      dot.className = `dot ${freshness(Number(dot.dataset.dot), every)}`;
    }
  }

  const resize = () => {
    for (const c of charts.values()) {
      const w = c.plotEl.clientWidth;
      if (w && Math.abs(w - c.u.width) > 2) c.u.setSize({ width: w, height: 200 });
    }
  };
  const ro = new ResizeObserver(() => requestAnimationFrame(resize));
  ro.observe(chartsBox);

  const refresh = throttled(async () => {
    if (missing) {
      // The page was built for an unknown device; build it again now that it may exist.
      route();
      return;
    }
    await Promise.all([loadThing(), loadHistory()]);
  });
  const off = onChange((names) => {
    if (names === null || names.includes(name)) refresh();
  });
  loadThing().then(() => { if (!missing) loadHistory(); });

  return {
    el,
    dispose() {
      off();
      refresh.cancel();
      ctl.abort();
      ro.disconnect();
      for (const c of charts.values()) c.u.destroy();
      charts.clear();
    },
  };
}

// --- Set-aside records ---

function errorsView() {
  const state = { cursors: [''], ctl: null };
  const tbody = h('tbody', null, loadingRow(5));
  const prev = h('button', { class: 'btn', disabled: true }, '‹ Prev');
  const next = h('button', { class: 'btn', disabled: true }, 'Next ›');
  const range = h('span', { class: 'num' });
  const total = h('span', { class: 'muted num' });
  // The records grouped by reason, each group retried or dismissed (writes: they need the token).
  const reasonsBody = h('tbody', null, loadingRow(4));
  const reasonsMsg = h('span', { class: 'muted', id: 'reasons-msg', role: 'status' });
  const reasonsEl = h('div', { class: 'panel', id: 'reasons-panel', style: 'margin-bottom:14px' },
    h('div', { class: 'panel-head' }, h('h2', null, 'By reason'), h('span', { class: 'spacer' }), reasonsMsg),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'grid', id: 'reasons' },
        h('thead', null, h('tr', null,
          h('th', null, 'Reason'), h('th', { class: 'r' }, 'Records'), h('th', null, 'Latest'), h('th', null, ''))),
        reasonsBody)));
  const listEl = h('div', { class: 'panel' },
    h('div', { class: 'panel-head' }, h('h2', null, 'Set-aside records'),
      h('span', { class: 'muted' }, 'Records that failed permanently, newest first'), h('span', { class: 'spacer' }), total),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'grid', id: 'errors' },
        h('thead', null, h('tr', null,
          h('th', null, 'Set aside'),
          h('th', null, 'Device'),
          h('th', null, 'Reason'),
          h('th', { class: 'col-type' }, 'Payload'),
          h('th', null, ''))),
        tbody)),
    h('div', { class: 'pager' }, range, h('span', { class: 'spacer' }), prev, next));
  const el = h('div', null, reasonsEl, listEl);

  async function loadReasons() {
    let body;
    try {
      body = await api('api/errors/reasons', state.ctl && state.ctl.signal);
    } catch (e) {
      if (e.name === 'AbortError') return;
      if (e.status === 404) { reasonsEl.hidden = true; return; } // a gateway without the route
      if (e.status || $('.loading', reasonsBody)) reasonsBody.replaceChildren(errorRow(4, e));
      return;
    }
    reasonsBody.replaceChildren(...(body.reasons.length ? body.reasons.map((g) => h('tr', { 'data-reason': g.reason },
      h('td', { class: 'reason' }, g.reason),
      h('td', { class: 'r num count' }, fmtInt(g.count)),
      h('td', null, relTime(Date.parse(g.lastAt) || 0)),
      h('td', { class: 'r actions' },
        h('button', {
          type: 'button', class: 'btn retry', title: 'Apply these records again (after fixing the cause)',
          onclick: () => retry({ reason: g.reason }),
        }, 'Retry'),
        h('button', {
          type: 'button', class: 'btn dismiss', title: 'Delete these records from the list',
          onclick: () => dismiss(g.reason),
        }, 'Dismiss')))) : [emptyRow(4, 'Nothing set aside', '')]));
  }

  // retry applies set-aside records again: those of a reason, or one (gw, seq). Each is applied
  // or set aside again with its new reason.
  async function retry(sel) {
    let res;
    try {
      res = await api(`api/errors/retry${qs(sel)}`, null, { method: 'POST' });
    } catch (e) {
      reasonsMsg.textContent = `Not retried: ${e.message}`;
      return;
    }
    const n = res.applied + res.setAside;
    let msg = `Retried ${fmtInt(n)} record${n === 1 ? '' : 's'}: ${fmtInt(res.applied)} applied, ${fmtInt(res.setAside)} set aside again.`;
    if (res.skipped) msg += ` ${fmtInt(res.skipped)} set aside by an older version cannot be retried.`;
    reasonsMsg.textContent = msg;
    state.cursors = [''];
    load();
    refreshStatus(false);
  }

  async function dismiss(reason) {
    try {
      const { dismissed } = await api(`api/errors${qs({ reason })}`, null, { method: 'DELETE' });
      reasonsMsg.textContent = `Dismissed ${fmtInt(dismissed)} record${dismissed === 1 ? '' : 's'}.`;
    } catch (e) {
      reasonsMsg.textContent = `Not dismissed: ${e.message}`;
      return;
    }
    state.cursors = [''];
    load();
    refreshStatus(false);
  }

  function payloadText(r) {
    if (r.payload !== undefined) return JSON.stringify(r.payload);
    if (r.payloadBase64) {
      try { return atob(r.payloadBase64).replace(/[^\x20-\x7e]/g, '·'); } catch { return r.payloadBase64; }
    }
    return '';
  }

  async function load() {
    if (state.ctl) state.ctl.abort();
    const ctl = new AbortController();
    state.ctl = ctl;
    let page;
    try {
      [page] = await Promise.all([
        api(`api/errors${qs({ limit: PAGE_SIZE, cursor: state.cursors[state.cursors.length - 1] })}`, ctl.signal),
        loadReasons(),
      ]);
    } catch (e) {
      if (e.name !== 'AbortError' && e.status) tbody.replaceChildren(errorRow(5, e));
      return;
    }
    tbody.replaceChildren(...(page.records.length ? page.records.map((r) => {
      const at = Date.parse(r.setAsideAt) || 0;
      const p = payloadText(r);
      return h('tr', { 'data-seq': r.seq },
        h('td', null, relTime(at), h('div', { class: 'muted mono', style: 'font-size:11.5px' }, `${r.gw} #${r.seq}`)),
        h('td', null, r.thingName ? h('a', { class: 'thing-name', href: `#/things/${encodeURIComponent(r.thingName)}` }, r.thingName) : h('span', { class: 'muted' }, '—'),
          h('div', { class: 'muted', style: 'font-size:12px' }, r.thingTypeName || '')),
        h('td', { class: 'reason' }, r.reason),
        h('td', { class: 'col-type' }, p ? h('details', { class: 'payload-full' }, h('summary', null, h('div', { class: 'payload' }, p))) : ''),
        h('td', { class: 'r' }, h('button', {
          type: 'button', class: 'btn retry-one', title: 'Apply this record again',
          onclick: () => retry({ gw: r.gw, seq: r.seq }),
        }, 'Retry')));
    }) : [emptyRow(5, 'Nothing set aside', 'Every record so far was applied.')]));
    const start = (state.cursors.length - 1) * PAGE_SIZE;
    total.textContent = `${fmtInt(page.total)} record${page.total === 1 ? '' : 's'}`;
    range.textContent = page.records.length ? `${fmtInt(start + 1)}–${fmtInt(start + page.records.length)} of ${fmtInt(page.total)}` : '';
    prev.disabled = state.cursors.length <= 1;
    next.disabled = !page.nextToken;
    next.dataset.token = page.nextToken || '';
  }
  next.addEventListener('click', () => { if (next.dataset.token) { state.cursors.push(next.dataset.token); load(); } });
  prev.addEventListener('click', () => { if (state.cursors.length > 1) { state.cursors.pop(); load(); } });

  const refresh = throttled(load);
  // Set-aside records come with the status count; reload when it may have changed.
  const off = onChange(() => { if (state.cursors.length === 1) refresh(); });
  load();
  return { el, dispose() { off(); refresh.cancel(); if (state.ctl) state.ctl.abort(); } };
}

// ---------- start ----------

function start() {
  renderConn();
  window.addEventListener('hashchange', route);
  route();
  refreshStatus(true);
  setInterval(() => refreshStatus(true), STATUS_MS);
  // Counts (things, set-aside records) follow changes sooner than the next tick.
  const statusSoon = throttled(() => refreshStatus(false));
  onChange(() => { if (conn.live) statusSoon(); });
  setInterval(tickRelTimes, 1000);
  connectEvents();
  // Until the stream opens, poll.
  if (!conn.live && !conn.pollTimer) conn.pollTimer = setInterval(() => emit(null), POLL_MS);
}

start();
